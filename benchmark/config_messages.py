"""One line for a config mistake that pydantic found: the key, the value and what is allowed, in words.

`message(error, root)` renders one of pydantic's errors of the model `root` (benchmark/schema.py's `Cell`, or a
group's model checked on its own); `names(union)` lists what a discriminated union accepts. Imports nothing heavy.
"""
from __future__ import annotations

import types
import typing
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, Field

from benchmark.checks import Number


def names(union) -> set[str]:
    """The values a discriminated union accepts for its discriminator (e.g. every pruning method)."""
    members, field = _union(union)
    return {value for member in members for value in _literal_values(member, field)}


def message(error: dict, root: type[BaseModel], prefix: str = "") -> str:
    """One line for a pydantic error of `root` (the model of the keys under `prefix`): the key, the value and what
    is allowed."""
    key, annotation, parent = _locate(error["loc"], root, prefix)
    value = error.get("input")
    kind, ctx = error["type"], error.get("ctx") or {}
    leaf = key.rsplit(".", 1)[-1]
    if kind == "missing":
        return f"{key} is missing; required: {_describe(annotation, leaf)}"
    if kind == "extra_forbidden":
        return f"{key}={value!r} is not a key of {parent[0] or 'the config'}; allowed keys: {', '.join(parent[1])}"
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        field = ctx["discriminator"].strip("'")
        allowed = ", ".join(sorted(names(annotation)))
        if kind == "union_tag_not_found":
            return f"{key}.{field} is missing; required: one of {allowed}"
        return f"{key}.{field}={ctx['tag']!r} is unknown; allowed: {allowed}"
    if kind == "literal_error":
        return f"{key}={value!r} is unknown; allowed: {ctx['expected']}"
    if kind == "number_range":
        spec = next(m for m in _unwrap(annotation)[1] if isinstance(m, Number))
        return f"{key}={value!r} is out of range; allowed: {spec.allowed(leaf, kind=False)}"
    if kind == "number_type":
        return f"{key}={value!r} is not {ctx['kind']}; allowed: {_describe(annotation, leaf)}"
    if kind == "related_keys":  # raised by a group's own check of keys that depend on each other
        return f"{key}.{ctx['field']}={ctx['value']!r} needs {ctx['needs']} in {key}"
    if kind == "too_short":
        return f"{key}={value!r} is empty; allowed: {_describe(annotation, leaf)} (at least {ctx['min_length']})"
    return f"{key}={value!r} is not allowed; allowed: {_describe(annotation, leaf)}"


def _unwrap(annotation):
    """(base type, metadata) without Annotated; Optional[X] -> X."""
    metadata = []
    while True:
        if typing.get_origin(annotation) is Annotated:
            metadata += list(annotation.__metadata__)
            annotation = typing.get_args(annotation)[0]
            continue
        if typing.get_origin(annotation) in (Union, types.UnionType):
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(args) == 1:
                annotation = args[0]
                continue
        return annotation, metadata


def _union(annotation) -> tuple[list, str] | None:
    """(members, discriminator field) of a discriminated union, else None."""
    base, metadata = _unwrap(annotation)
    field = next((m.discriminator for m in metadata if getattr(m, "discriminator", None)), None)
    if field and typing.get_origin(base) in (Union, types.UnionType):
        return list(typing.get_args(base)), field
    return None


def _literal_values(member, field: str) -> tuple:
    nested = _union(member)
    if nested:  # a union of unions: e.g. threat kind -> attack
        return tuple(v for m in nested[0] for v in _literal_values(m, field))
    return typing.get_args(_unwrap(_field(member, field))[0])


def _field(model, name: str):
    """A model field's annotation with what pydantic keeps beside it (metadata, discriminator) put back."""
    info = model.model_fields.get(name) or next(  # a key that is no identifier (`_target_`) is a field's alias
        (field for field in model.model_fields.values() if field.alias == name), None)
    if info is None:
        return None
    annotation = info.rebuild_annotation()
    return Annotated[annotation, Field(discriminator=info.discriminator)] if info.discriminator else annotation


def _model_of(annotation):
    base, _ = _unwrap(annotation)
    return base if isinstance(base, type) and issubclass(base, BaseModel) else None


def _locate(loc: tuple, root: type[BaseModel], prefix: str) -> tuple[str, Any, tuple[str, list[str]]]:
    """The dotted key of a pydantic error location (union tags dropped, list items as [i]), the annotation there,
    and (key, field names) of the innermost model around it."""
    key, annotation, parent = prefix, root, (prefix, list(root.model_fields))
    for part in loc:
        union = _union(annotation)
        if union and isinstance(part, str) and any(part in _literal_values(m, union[1]) for m in union[0]):
            annotation = next(m for m in union[0] if part in _literal_values(m, union[1]))
            continue
        model = _model_of(annotation)
        if model is not None and isinstance(part, str):
            parent = (key, list(model.model_fields))
            annotation = _field(model, part)
            key = f"{key}.{part}" if key else part
            continue
        base, _ = _unwrap(annotation)
        if isinstance(part, int) and typing.get_origin(base) is list:
            annotation = typing.get_args(base)[0]
            key = f"{key}[{part}]"
            continue
        key = f"{key}.{part}" if key else str(part)
        annotation = None
    return key, annotation, parent


def _describe(annotation, name: str) -> str:
    """What a key accepts, in words."""
    if annotation is None:
        return "nothing (an unknown key)"
    base, metadata = _unwrap(annotation)
    optional = typing.get_origin(annotation) in (Union, types.UnionType) and type(None) in typing.get_args(annotation)
    spec = next((m for m in metadata if isinstance(m, Number)), None)
    if spec is not None:
        text = spec.allowed(name)
    elif _union(annotation):
        text = f"a mapping with {_union(annotation)[1]} one of {', '.join(sorted(names(annotation)))}"
    elif typing.get_origin(base) is Literal:
        text = "one of " + ", ".join(repr(v) for v in typing.get_args(base))
    elif typing.get_origin(base) is list:
        text = f"a list, each {_describe(typing.get_args(base)[0], name + '[i]')}"
    elif base is bool:
        text = "true or false"
    elif base is str:
        text = "a string"
    elif _model_of(base) is not None:
        text = f"a mapping with keys {', '.join(base.model_fields)}"
    else:
        text = str(base)
    return f"null or {text}" if optional else text
