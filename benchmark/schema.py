"""The cell config's schema: every key of every config group, its type, its range and whether it is required.

`check(plain)` validates a resolved cell config (plain dicts and lists) with pydantic and raises `ConfigError`
with one line naming the key, the value and what is allowed (benchmark/config_messages.py words it). Unknown keys
are rejected in every group (so `+pruning.sparsityy=0.5` cannot make a new cell hash). This module imports neither
torch nor any library that does: a config mistake is reported before the heavy imports.

This module assembles; plugins declare. A pruning method's, a dataset's and an attack's keys are declared in their
own modules (benchmark/pruning/methods/, benchmark/datasets/, attacks/evasion_attacks/, attacks/poisoning_attacks/,
attacks/backdoor_attacks/) and collected from their registries; the threat kinds' and the other groups' keys are
declared here. A model's own options are declared by its module (models/) and checked by `check_group` from
benchmark/validate.py, with the model name, because importing models imports torch.
"""

from typing import Annotated, Literal, Union

from pydantic import ConfigDict, Field, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from attacks.backdoor_attacks import BACKDOOR_ATTACKS
from attacks.evasion_attacks import EVASION_ATTACKS
from attacks.poisoning_attacks import POISONING_ATTACKS
from benchmark.checks import BATCH, COUNT, EPOCHS, LR, SEED, UNIT, ConfigError, Group, number, whole
from benchmark.config_messages import message
from benchmark.datasets import DATASETS
from benchmark.pruning import PRUNERS
from models import ModelConfig


# ---- dataset, model, training -------------------------------------------------------------------------------------
class Model(ModelConfig):
    """The keys every model has; its own options pass here and are checked against its module's config model
    (models/) by benchmark/validate.py."""
    model_config = ConfigDict(extra="allow", strict=True)


class Recipe(Group):
    """How a training loop trains (benchmark/recipes.py): torch's optimiser and learning-rate scheduler, and the
    training batches' augmentation (attacks and metrics always see the un-augmented test images)."""
    lr: LR
    batch_size: BATCH
    optimizer: Literal["adam", "sgd"]
    momentum: number(0.0, 1.0, high_open=True)  # sgd only
    nesterov: bool  # sgd only; needs momentum > 0
    weight_decay: number(0.0, 1.0)  # L2 term of the optimiser (adam or sgd)
    schedule: Literal["none", "cosine", "step", "onecycle"]
    milestones: list[whole(1, 10_000)]  # step: the epochs after which the learning rate is multiplied by gamma
    gamma: number(0.0, 1.0, low_open=True)  # step only
    augment: Literal["none", "crop_flip"]

    @model_validator(mode="after")
    def _related_keys(self):
        if self.optimizer == "sgd" and self.nesterov and self.momentum == 0:
            raise _related("nesterov", self.nesterov, "momentum > 0 (momentum=0)")
        if self.schedule == "step":
            if not self.milestones:
                raise _related("schedule", "step", "milestones, a non-empty list of epochs")
            if list(self.milestones) != sorted(set(self.milestones)) or self.milestones[-1] > self.epochs:
                raise _related("milestones", self.milestones, f"increasing epochs within 1..epochs ({self.epochs})")
        return self


def _related(field: str, value, needs: str) -> PydanticCustomError:
    """A value that the group's other keys make invalid (benchmark.schema._message names the group)."""
    return PydanticCustomError("related_keys", "{field}={value} needs {needs}",
                               {"field": field, "value": value, "needs": needs})


class Train(Recipe):
    epochs: whole(1, 10_000)  # a dense model is trained: 0 epochs would leave it at chance
    slimming_l1: number(0.0, 1.0)
    adversarial: Literal["none", "pgd", "trades"]  # pgd: Madry et al. 2018; trades: Zhang et al. 2019
    adv_eps: number(0.0, 1.0, low_open=True)  # L-inf radius of the training attack (inputs in [0, 1])
    adv_steps: whole(1, 1000)
    adv_step_size: number(0.0, 1.0, low_open=True)
    trades_beta: number(0.0, 1000.0)  # trades: weight of the KL robustness term


class Finetune(Recipe):
    epochs: EPOCHS  # 0: no fine-tuning after pruning
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


class Data(Group):
    """How the loader's training split is shared out (benchmark/inputs.defender_count)."""
    # The defender split, held out from every training stage: an image count (>= 1, whole), a share of the
    # training split (in (0, 1)), or null (the default: the larger of 500 and 5% of train, at most an eighth of it).
    defender_size: number(0.0, 10_000_000, low_open=True) | None


# ---- plugins declare their own models: pruning methods, datasets, attacks ----------------------------------------
def _discriminated(registry, field: str):
    members = list(dict.fromkeys(entry.config for entry in registry.entries()))  # one model may serve several names
    return Annotated[Union[tuple(members)], Field(discriminator=field)] if len(members) > 1 else members[0]


PRUNING = _discriminated(PRUNERS, "method")
DATASET = _discriminated(DATASETS, "name")
ATTACK = _discriminated(EVASION_ATTACKS, "name")  # an entry of an evasion threat's `attacks`
POISONING = _discriminated(POISONING_ATTACKS, "attack")
BACKDOOR = _discriminated(BACKDOOR_ATTACKS, "attack")


# ---- threat kinds -----------------------------------------------------------------------------------------------
class Threat(Group):
    name: str
    subset: COUNT  # seeded test images the threat metrics are measured on


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
    data: Data
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
        raise ConfigError(message(err.errors()[0], Cell)) from None


def check_group(key: str, model: type[Group], plain: dict) -> None:
    """Raise ConfigError for the first key of `plain` (the config group `key`) that breaks `model`."""
    try:
        model.model_validate(plain)
    except ValidationError as err:
        raise ConfigError(message(err.errors()[0], model, key)) from None
