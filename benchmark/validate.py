"""Checks on a cell config that run before any data is loaded, any model is trained or any run is created.

Two stages, each error one line naming the key, the bad value and what is allowed:
- `check_config` (no torch, no ART, no MLflow: a mistake is reported within a second or two): the schema of
  every key (benchmark/schema.py), the values that refer to each other, and whether the dataset's files and the
  model's checkpoint exist.
- `validate`: the above, then the checks that need the libraries: each threat's own checks, the model built once
  from the dataset's shape (impossible combinations), each pruning method's fit to the model.
Hydra itself rejects unknown config-group options (`model=resnet50` -> "Could not find 'model/resnet50'...");
`check_group_overrides` rejects a group value that is no option name at all (a number, a list of numbers), which
Hydra reports without naming the group.
"""
from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from benchmark import schema
from benchmark.checks import ConfigError, in_range
from benchmark.datasets import DATASETS

__all__ = ["ConfigError", "check_config", "check_group_overrides", "compose_config", "validate"]

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


def compose_config(overrides) -> DictConfig:
    """The config `python -m benchmark.run` composes from `overrides` (conf/), outside a running Hydra app."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))

def resolved(cfg: DictConfig) -> dict:
    """The config as plain values, interpolations resolved; a broken interpolation is a config mistake."""
    try:
        return OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None) or "?"
        raise ConfigError(f"{key} cannot be resolved: {str(err).splitlines()[0]}") from None


def check_config(cfg: DictConfig) -> None:
    """Everything that can be checked without torch: schema, keys that refer to each other, dataset files, the
    checkpoint file."""
    plain = resolved(cfg)
    schema.check(plain)
    num_classes = plain["dataset"].get("num_classes")  # None: read from the data (validate checks it then)
    threat = plain["threat"]
    for key in ("target_class", "source_class"):
        if key in threat and num_classes is not None:
            in_range(f"threat.{key}", threat[key], 0, num_classes - 1)
    if plain["model"].get("checkpoint") and threat.get("kind") in ("poisoning", "backdoor"):
        raise ConfigError(f"model.checkpoint={plain['model']['checkpoint']!r} with threat.kind={threat['kind']!r}: "
                          "the checkpoint would replace the poisoned dense training, so the attack would never "
                          "reach the model; allowed: model.checkpoint=null with a data threat, or an evasion "
                          "threat with a checkpoint")
    _check_dataset_shape(plain["dataset"])
    if plain["model"].get("checkpoint"):
        from models.checkpoint import checkpoint_path

        checkpoint_path(plain["model"]["checkpoint"])
    if DATASETS[plain["dataset"]["name"]].summary is None:  # declared shape: its split is checked without the files
        from benchmark.inputs import dataset_shape

        dataset_shape(cfg.dataset)
    _check_dataset_files(plain["dataset"])
    if DATASETS[plain["dataset"]["name"]].summary is None:  # your own data: `validate` checks it from its files
        from benchmark.inputs import check_defender_size

        check_defender_size(cfg.dataset, plain["data"]["defender_size"])


def check_group_overrides(arguments: list[str], conf_dir: Path = CONF_DIR) -> None:
    """Command-line overrides of a config group (a folder of `conf_dir`) name its options: strings, one or a
    list or a sweep of them. Arguments that are no override (flags and their values) or that Hydra cannot parse are
    left to Hydra."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    parser = OverridesParser.create()
    for argument in arguments:
        try:
            override, = parser.parse_overrides([argument])
        except HydraException:  # a flag, a flag's value, or a mistake Hydra reports
            continue
        group = conf_dir / override.key_or_group
        if override.is_delete() or not group.is_dir():
            continue
        value = list(override.sweep_iterator()) if override.is_sweep_override() else override.value()
        if not all(isinstance(choice, str) for choice in (value if isinstance(value, list) else [value])):
            options = sorted(path.stem for path in group.glob("*.yaml"))
            raise ConfigError(f"{override.input_line}: '{override.key_or_group}' is a config group; its value "
                              f"names one of its options: {options}")


def check_device(name: str) -> None:
    """`device=cuda` needs a CUDA device on the machine that computes (imports torch: call it where the cell runs)."""
    if name == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ConfigError("device='cuda' but torch sees no CUDA device here; allowed here: 'auto', 'cpu'")


def _check_dataset_shape(dataset: dict) -> None:
    """A dataset that declares its shape states it in its config: each key present, and equal to the declared
    value where the loader fixes one (None: the loader resizes to it, so any whole number the schema allows)."""
    for key, fact in zip(("in_channels", "image_size", "num_classes"), DATASETS[dataset["name"]].shape or ()):
        value = dataset.get(key)
        if value is None or (fact is not None and value != fact):
            allowed = fact if fact is not None else "a whole number >= 1 (the loader resizes to it)"
            raise ConfigError(f"dataset.{key}={value!r} is not what dataset.name={dataset['name']!r} has; "
                              f"allowed: {allowed}")


def _check_dataset_files(dataset: dict) -> None:
    """A torchvision dataset needs its files under data_root unless it may download them."""
    files = DATASETS[dataset["name"]].files
    if not files or dataset.get("download"):
        return
    root = Path(dataset.get("data_root") or ".").expanduser().resolve()
    missing = [name for name in files if not (root / name).is_file()]
    if missing:
        raise ConfigError(
            f"dataset.data_root={dataset.get('data_root')!r} lacks the {dataset['name']} files ({root / missing[0]} "
            f"and {len(missing) - 1} more); allowed: a folder with them, or dataset.download=true on a machine "
            "with network access")


def validate(cfg: DictConfig) -> None:
    """All checks: `check_config`, then those that need torch and the registries (called by cell.prepare):
    the threat's own cross-key checks, the classes the threat names against the data's, the
    model (registered, built once for the data's shape) and what the pruning method needs of it."""
    check_config(cfg)
    from attacks import THREATS
    from benchmark.inputs import check_defender_size, dataset_shape
    from models import MODELS, model_config

    threat = THREATS[cfg.threat.kind].target
    threat.check_config(cfg.threat)
    shape = dataset_shape(cfg.dataset)  # your own data: read from its files (DataError, a ConfigError, if unfit)
    if DATASETS[cfg.dataset.name].summary is not None:
        check_defender_size(cfg.dataset, cfg.data.defender_size)
    for key in threat.class_keys(cfg.threat):
        in_range(f"threat.{key}", cfg.threat[key], 0, shape.num_classes - 1)
    threat.check_classes(cfg.threat, shape.num_classes)
    for key, name in (("model.name", cfg.model.name), ("threat.proxy.model", (cfg.threat.get("proxy") or {}).get("model"))):
        if name is not None and name not in MODELS:
            raise ConfigError(f"{key}={name!r} is unknown; allowed: {', '.join(map(repr, MODELS.names()))}")
    schema.check_group("model", model_config(cfg.model.name), resolved(cfg.model))  # the model's own options
    _model_fits_dataset(cfg, shape)


def _model_fits_dataset(cfg: DictConfig, shape) -> None:
    """Build the model once for the data's shape and run one image through it; check its checkpoint and what the
    pruning method needs (models/checks.py): catches impossible combinations early."""
    from benchmark.pruning import PRUNERS
    from models.checks import model_problems

    _, problems = model_problems(cfg.model, shape, PRUNERS[cfg.pruning.method])
    for key, value, allowed in problems:
        model = next(f"model.{k}={cfg.model[k]!r}" for k in ("_target_", "arch", "name") if cfg.model.get(k))
        other = model if key in ("pruning.method", "model.checkpoint") else f"dataset.name={cfg.dataset.name!r}"
        raise ConfigError(f"{key}={value!r} does not fit {other}; allowed: {allowed}")
