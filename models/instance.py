"""A module object handed to `benchmark.evaluate` / `benchmark.prune` (benchmark/api.py), as a registered model:
`model.name: instance`. The object is held by this process under the sha256 of its structure (`repr`: every
layer's type and sizes); the builder returns a copy with freshly initialised parameters (like any builder, an
untrained model), and the object's weights reach the cell as its checkpoint (`model.checkpoint`, identified by
its sha256). `code` identifies the classes of the module tree by content (models/import_path.py), so the same
structure from edited code is another model. There is no conf/model/instance.yaml: on the command line, name an
architecture (a registered model, or `model=custom` with its import path).
"""
from __future__ import annotations

import copy
import hashlib
import inspect
from typing import Literal

import torch.nn as nn

from benchmark.checks import ConfigError
from models import MODELS, ModelConfig
from models.import_path import source_identity

_HELD: dict[str, nn.Module] = {}  # structure sha256 -> a CPU copy of the object


class Instance(ModelConfig):
    name: Literal["instance"]
    module_class: str  # the object's class, pkg.module.Class
    structure_sha256: str
    code: dict[str, dict]  # class path -> its code's identity


def _class_path(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _code_identity(cls: type) -> dict:
    """The class's module by content (its file's sha256 or its distribution's version); a class without a module
    file (defined in a notebook or `__main__`) by the sha256 of its source text, or its name alone."""
    try:
        if cls.__module__ != "__main__":
            return source_identity(_class_path(cls), key="model")
    except ConfigError:
        pass
    try:
        return {"class_source_sha256": hashlib.sha256(inspect.getsource(cls).encode()).hexdigest()}
    except (OSError, TypeError):
        return {"class_source": "unavailable"}


def hold(model: nn.Module) -> dict:
    """Hold a copy of `model` and return its `model` config group (without the checkpoint)."""
    structure = hashlib.sha256(repr(model).encode()).hexdigest()
    _HELD.setdefault(structure, copy.deepcopy(model).cpu())
    classes = {type(m) for m in model.modules() if not type(m).__module__.startswith("torch.")}
    return {"name": "instance", "module_class": _class_path(type(model)), "structure_sha256": structure,
            "code": {_class_path(cls): _code_identity(cls) for cls in sorted(classes, key=_class_path)}}


@MODELS.register("instance", config=Instance)
def instance(in_channels: int, image_size: int, num_classes: int, /, *, structure_sha256: str, **identity) -> nn.Module:
    """A copy of the held object, its parameters re-initialised where its layers can (`reset_parameters`)."""
    held = _HELD.get(structure_sha256)
    if held is None:
        raise ConfigError(f"model.name='instance' (structure {structure_sha256[:16]}) is a module object handed to "
                          "benchmark.evaluate or benchmark.prune in this process; allowed elsewhere: a registered "
                          "model, or model=custom with its import path")
    model = copy.deepcopy(held)
    for module in model.modules():
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
    return model
