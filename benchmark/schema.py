"""The cell config's schema: every key of every config group, its type, its range and whether it is required.

`check(plain)` validates a resolved cell config (plain dicts and lists) with pydantic and raises `ConfigError`
with one line naming the key, the value and what is allowed. Unknown keys are rejected in every group (so
`+pruning.sparsityy=0.5` cannot make a new cell hash). This module imports neither torch nor any library that
does: a config mistake is reported before the heavy imports.

Where a key is declared: a pruning method's and a dataset's keys in their own modules (benchmark/pruning/methods/,
benchmark/datasets/), collected from the registries; every other group's here, in the model of its group. The
threat and attack names listed here are the registries' (tests/test_validation.py checks they agree); model names
are checked against the model registry by benchmark/validate.py, because importing models imports torch.
"""

import types
import typing
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, Field, ValidationError

from benchmark.checks import (BATCH, CLASS, COUNT, EPOCHS, LR, SEED, UNIT, ConfigError, Group, Number, number,
                              whole)
from benchmark.datasets import DATASETS
from benchmark.pruning import PRUNERS


# A registered model (models/): the registry imports torch, so benchmark.validate checks the name.
MODEL_NAME = Annotated[str, Field(min_length=1)]


# ---- dataset, model, training -------------------------------------------------------------------------------------
class Model(Group):
    name: MODEL_NAME
    checkpoint: str | None = None  # trained weights that replace dense training
    arch: str | None = None  # torchvision: the torchvision.models builder
    cifar_stem: Literal["auto"] | bool = "auto"  # torchvision: 3x3 stride-1 stem, no max-pool


class Train(Group):
    epochs: whole(1, 10_000)  # a dense model is trained: 0 epochs would leave it at chance
    lr: LR
    batch_size: BATCH
    slimming_l1: number(0.0, 1.0)


class Finetune(Group):
    epochs: EPOCHS  # 0: no fine-tuning after pruning
    lr: LR
    batch_size: BATCH
    adversarial: bool
    adv_eps: number(1e-6, 1.0)
    adv_steps: whole(1, 1000)


# ---- eval -------------------------------------------------------------------------------------------------------
class Latency(Group):
    batch_size: whole(1, 100_000)
    repeats: whole(1, 10_000)
    threads: whole(1, 4096)


class Corruptions(Group):
    enabled: bool
    subset: COUNT | None
    gaussian_noise: list[number(0.0, 100.0)]
    gaussian_blur: list[number(1e-9, 100.0)]
    contrast: list[number(1e-9, 1.0)]


class Interpret(Group):
    enabled: bool
    subset: whole(1, 100_000)
    methods: list[Literal["saliency", "integrated_gradients"]]
    ig_steps: whole(1, 10_000)
    baseline: number(0.0, 1.0)
    topk: number(1e-9, 1.0)
    deletion_steps: whole(1, 10_000)
    figure_images: whole(0, 64)


class Eval(Group):
    train_subset: COUNT
    collapse_margin: UNIT  # clean/collapsed: clean accuracy <= chance + this margin
    latency: Latency
    calib_bins: whole(1, 10_000)
    corruptions: Corruptions
    interpret: Interpret


# ---- pruning methods and datasets declare their own models (benchmark/pruning/methods/, benchmark/datasets/) ------
def _discriminated(registry, field: str):
    members = list(dict.fromkeys(entry.config for entry in registry.entries()))  # one model may serve several names
    return Annotated[Union[tuple(members)], Field(discriminator=field)] if len(members) > 1 else members[0]


PRUNING = _discriminated(PRUNERS, "method")
DATASET = _discriminated(DATASETS, "name")


# ---- threats (one model per kind, and per attack for poisoning and backdoors) ------------------------------------
class Threat(Group):
    name: str
    subset: COUNT  # seeded test images the threat metrics are measured on


class Attack(Group):
    subset: COUNT | None = None  # a prefix of the threat's subset (expensive attacks)
    batch_size: BATCH


class Fgsm(Attack):
    name: Literal["fgsm"]


class Pgd(Attack):
    name: Literal["pgd_linf", "pgd_l2"]
    max_iter: whole(1, 1_000_000)
    step_fraction: number(1e-6, 10.0)
    random_restarts: whole(0, 10_000)


class Square(Attack):
    name: Literal["square_linf", "square_l2"]
    max_iter: whole(1, 1_000_000)
    p_init: number(1e-6, 1.0)
    restarts: whole(1, 10_000)


class AutoAttack(Attack):
    name: Literal["autoattack_linf", "autoattack_l2"]
    components: Annotated[list[Literal["apgd_ce", "apgd_dlr", "square"]], Field(min_length=1)]
    max_iter: whole(1, 1_000_000)
    step_fraction: number(1e-6, 10.0)
    random_restarts: whole(0, 10_000)
    square_queries: whole(1, 1_000_000)


class AutoAttackReference(Attack):
    """The reference standard AutoAttack (attacks/autoattack_reference.py): APGD-CE, APGD-T, FAB-T, Square."""
    name: Literal["autoattack_standard", "autoattack_standard_l2"]
    max_iter: whole(1, 1_000_000)  # APGD and FAB iterations; the reference's standard version: 100
    square_queries: whole(1, 1_000_000)  # the reference's standard version: 5000


class AutoAttackArtStandard(Attack):
    """The reference composition rebuilt from ART's parts (attacks/evasion.py ArtStandardAutoAttack)."""
    name: Literal["autoattack_art_standard"]
    max_iter: whole(1, 1_000_000)  # reference: 100
    step_fraction: number(1e-6, 10.0)  # reference: 2.0 (APGD's initial step = 2 eps)
    random_restarts: whole(1, 10_000)  # reference: 1
    targets: whole(1, 100_000)  # most likely non-true classes for targeted APGD-DLR (<= classes - 1); reference: 9
    square_queries: whole(1, 1_000_000)  # reference: 5000


class CarliniL2(Attack):
    name: Literal["cw_l2"]
    learning_rate: number(1e-9, 100.0)
    binary_search_steps: whole(1, 1000)
    max_iter: whole(1, 1_000_000)
    initial_const: number(1e-9, 1e9)


class DeepFool(Attack):
    name: Literal["deepfool"]
    max_iter: whole(1, 1_000_000)
    overshoot: number(0.0, 10.0)
    nb_grads: whole(2, 100_000)


class Fmn(Attack):
    """Fast Minimum-Norm (attacks/fmn.py)."""
    name: Literal["fmn_linf", "fmn_l2"]
    max_iter: whole(1, 1_000_000)
    step_size: number(1e-6, 1000.0)  # initial step (L2 norm of the normalized gradient step), annealed to 1/100
    gamma: number(1e-6, 1.0)  # initial eps-ball update factor, annealed to 0.001


ATTACK = Annotated[Union[Fgsm, Pgd, Square, AutoAttack, AutoAttackReference, AutoAttackArtStandard, CarliniL2,
                         DeepFool, Fmn],
                   Field(discriminator="name")]


class Convergence(Group):
    """PGD re-run at larger budgets (attacks/evasion.py)."""
    multipliers: list[whole(2, 1000)]
    scale: Literal["restarts", "steps"] = "restarts"
    seeds: list[SEED] | None = None


class Evasion(Threat):
    kind: Literal["evasion"]
    eps: list[UNIT]
    eps_l2: list[number(0.0, 1000.0)] = []
    masking_tolerance: UNIT = 0.0
    convergence: Convergence | None = None
    attacks: Annotated[list[ATTACK], Field(min_length=1)]


class Smoothing(Threat):
    kind: Literal["smoothing"]
    sigma: number(1e-6, 100.0)
    n_select: whole(1, 100_000_000)
    n_certify: whole(1, 100_000_000)
    alpha: number(1e-12, 0.5)
    radii: list[number(0.0, 1000.0)]
    batch_size: BATCH


class Proxy(Group):
    """The clean model an attacker trains for the clean-label attacks."""
    model: MODEL_NAME
    epochs: whole(1, 10_000)
    lr: LR


class Poisoned(Threat):
    poison_rate: UNIT
    target_class: CLASS
    stage: Literal["poison_then_prune", "prune_then_poison"]
    finetune_data: Literal["clean", "poisoned"]
    clean_reference: bool
    effective_threshold: UNIT  # threat/effective: the dense model's success reaches it


class LabelFlip(Poisoned):
    kind: Literal["poisoning"]
    attack: Literal["label_flip"]
    mode: Literal["random", "targeted"]
    source_class: CLASS  # targeted only


class FeatureCollision(Poisoned):
    kind: Literal["poisoning"]
    attack: Literal["feature_collision"]
    source_class: CLASS
    num_targets: whole(1, 10_000)
    feature_layer: whole(-1000, 1000)  # ART layer index; negative counts from the end
    max_iter: whole(1, 1_000_000)
    learning_rate: number(1e-12, 1e6)
    similarity_coeff: number(0.0, 1e9)
    watermark: UNIT
    proxy: Proxy


class PatternTrigger(Group):
    kind: Literal["pattern"]
    distances: Annotated[list[whole(1, 1000)], Field(min_length=1)]
    pixel_value: UNIT


class BandTrigger(Group):
    kind: Literal["band"]
    extent: number(0.0, 1.0, low_open=True)  # share of the way from the bottom-right to the top-left corner
    pixel_value: UNIT


class BlendTrigger(Group):
    kind: Literal["blend"]
    alpha: UNIT
    seed: SEED


TRIGGER = Annotated[Union[PatternTrigger, BandTrigger, BlendTrigger], Field(discriminator="kind")]


class TriggerPgd(Group):
    eps: UNIT
    eps_step: UNIT
    max_iter: whole(1, 1_000_000)


class BadNets(Poisoned):
    kind: Literal["backdoor"]
    attack: Literal["badnets"]
    trigger: TRIGGER


class Blended(Poisoned):
    kind: Literal["backdoor"]
    attack: Literal["blended"]
    trigger: TRIGGER


class CleanLabel(Poisoned):
    kind: Literal["backdoor"]
    attack: Literal["clean_label"]
    poison_rate: number(0.0, 1.0, high_open=True)  # ART's pp_poison must be < 1
    trigger: TRIGGER
    pgd: TriggerPgd
    proxy: Proxy


POISONING = Annotated[Union[LabelFlip, FeatureCollision], Field(discriminator="attack")]
BACKDOOR = Annotated[Union[BadNets, Blended, CleanLabel], Field(discriminator="attack")]
THREAT = Annotated[Union[Evasion, Smoothing, POISONING, BACKDOOR], Field(discriminator="kind")]


# ---- the cell ---------------------------------------------------------------------------------------------------
class Cell(Group):
    seed: SEED
    device: Literal["auto", "cpu", "cuda"]
    force: bool
    experiment_name: Annotated[str, Field(min_length=1)]
    results_dir: Annotated[str, Field(min_length=1)]
    tracking_uri: str | None
    torch_threads: whole(1, 4096) | None
    eval: Eval
    finetune: Finetune
    train: Train
    dataset: DATASET
    model: Model
    pruning: PRUNING
    threat: THREAT


def check(plain: dict) -> None:
    """Raise ConfigError for the first key of `plain` (a resolved cell config) that breaks the schema."""
    try:
        Cell.model_validate(plain)
    except ValidationError as err:
        raise ConfigError(_message(err.errors()[0])) from None


def names(union) -> set[str]:
    """The values a discriminated union accepts for its discriminator (e.g. every pruning method)."""
    members, field = _union(union)
    return {value for member in members for value in _literal_values(member, field)}


# ---- messages -------------------------------------------------------------------------------------------------------
def _message(error: dict) -> str:
    key, annotation, parent = _locate(error["loc"])
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
    info = model.model_fields.get(name)
    if info is None:
        return None
    annotation = info.rebuild_annotation()
    return Annotated[annotation, Field(discriminator=info.discriminator)] if info.discriminator else annotation


def _model_of(annotation):
    base, _ = _unwrap(annotation)
    return base if isinstance(base, type) and issubclass(base, BaseModel) else None


def _locate(loc: tuple) -> tuple[str, Any, tuple[str, list[str]]]:
    """The dotted key of a pydantic error location (union tags dropped, list items as [i]), the annotation there,
    and (key, field names) of the innermost model around it."""
    key, annotation, parent = "", Cell, ("", list(Cell.model_fields))
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
