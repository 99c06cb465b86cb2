"""Checks on a resolved cell config that run before any data is loaded or any model is trained.

Each error names the key, the bad value and what is allowed. Hydra itself rejects unknown config-group
options (`model=resnet50` -> "Could not find 'model/resnet50'. Available options: ...")."""
from __future__ import annotations

from omegaconf import DictConfig


class ConfigError(ValueError):
    pass


def _choice(key: str, value, allowed) -> None:
    if value not in allowed:
        raise ConfigError(f"{key}={value!r} is unknown; allowed: {sorted(allowed)}")


def _range(key: str, value, low, high, *, high_open: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and low <= value and (
        value < high if high_open else value <= high)
    if not ok:
        raise ConfigError(f"{key}={value!r} is out of range; allowed: {low} <= {key.split('.')[-1]} "
                          f"{'<' if high_open else '<='} {high}")


def validate(cfg: DictConfig) -> None:
    from attacks import ATTACKS, THREATS
    from benchmark.data import LOADERS
    from benchmark.pruning import PRUNERS, STRUCTURED
    from models import MODELS

    _choice("dataset.name", cfg.dataset.name, LOADERS)
    _choice("model.name", cfg.model.name, MODELS)
    _choice("pruning.method", cfg.pruning.method, PRUNERS)
    _choice("threat.kind", cfg.threat.kind, THREATS)
    _choice("device", cfg.device, {"auto", "cpu", "cuda"})
    if cfg.get("torch_threads") is not None:
        _range("torch_threads", cfg.torch_threads, 1, 4096)
    _range("seed", cfg.seed, 0, 2**32 - 1)
    _range("pruning.sparsity", cfg.pruning.sparsity, 0.0, 1.0, high_open=True)
    if cfg.pruning.method == "threshold":
        _range("pruning.rate", cfg.pruning.rate, 0.0, 1.0)
    _range("eval.train_subset", cfg.eval.train_subset, 1, 10_000_000)
    _range("eval.collapse_margin", cfg.eval.collapse_margin, 0.0, 1.0)
    from benchmark.properties import check_config as check_eval_config

    check_eval_config(cfg.eval)  # calibration bins, corruption severities, interpretability subset (issue 5)
    for group in ("train", "finetune"):
        _range(f"{group}.epochs", cfg[group].epochs, 0, 10_000)
        _range(f"{group}.lr", cfg[group].lr, 1e-12, 10.0)
        _range(f"{group}.batch_size", cfg[group].batch_size, 1, 1_000_000)
    _range("train.slimming_l1", cfg.train.get("slimming_l1", 0.0), 0.0, 1.0)
    for key, high in (("batch_size", 100_000), ("repeats", 10_000), ("threads", 4096)):
        _range(f"eval.latency.{key}", cfg.eval.latency[key], 1, high)
    if cfg.finetune.get("adversarial", False):
        _range("finetune.adv_eps", cfg.finetune.adv_eps, 1e-6, 1.0)
        _range("finetune.adv_steps", cfg.finetune.adv_steps, 1, 1000)
    if cfg.threat.kind == "evasion":
        _range("threat.subset", cfg.threat.subset, 1, 10_000_000)
        for i, eps in enumerate(cfg.threat.eps):
            _range(f"threat.eps[{i}]", eps, 0.0, 1.0)
        for i, attack in enumerate(cfg.threat.attacks):
            _choice(f"threat.attacks[{i}].name", attack.name, ATTACKS)
            _attack_params(f"threat.attacks[{i}]", attack)
    if "poison_rate" in cfg.threat:  # any poisoning threat's share of the training set
        _range("threat.poison_rate", cfg.threat.poison_rate, 0.0, 1.0)
    check = getattr(THREATS[cfg.threat.kind], "check_config", None)  # a threat's own checks, if it has any
    if check is not None:
        check(cfg.threat)
    from benchmark.data import dataset_shape

    shape = dataset_shape(cfg.dataset)  # your own data: read from its files (DataError, a ConfigError, if unfit)
    for key in getattr(THREATS[cfg.threat.kind], "class_keys", lambda _: [])(cfg.threat):  # classes it names
        _range(f"threat.{key}", cfg.threat[key], 0, shape.num_classes - 1)
    _model_fits_dataset(cfg, shape, STRUCTURED)


# Numeric attack parameters shared by ART's evasion attacks: key -> (low, high).
_ATTACK_RANGES = {"batch_size": (1, 1_000_000), "max_iter": (1, 1_000_000), "step_fraction": (1e-6, 10.0),
                  "random_restarts": (0, 10_000)}


def _attack_params(prefix: str, attack) -> None:
    for key, (low, high) in _ATTACK_RANGES.items():
        if key in attack:
            _range(f"{prefix}.{key}", attack[key], low, high)


def _model_fits_dataset(cfg: DictConfig, shape, structured_methods) -> None:
    """Build the model once for the data's shape and run one image through it; check its checkpoint and what the
    pruning method needs (models/checks.py): catches impossible combinations early."""
    import torch.nn as nn

    from models import classifier_head
    from models.checks import model_problems

    model, problems = model_problems(cfg.model, shape, cfg.pruning.method, structured_methods)
    for key, value, allowed in problems:
        raise ConfigError(f"{key}={value!r} does not fit dataset.name={cfg.dataset.name!r}; allowed: {allowed}")
    if cfg.pruning.method in structured_methods:
        head = classifier_head(model)
        if not any(isinstance(m, (nn.Conv2d, nn.Linear)) and m is not head for m in model.modules()):
            raise ConfigError(f"pruning.method={cfg.pruning.method!r} is structured but model.name={cfg.model.name!r} "
                              "has no prunable channels besides its classifier head")
    from benchmark.pruning import check_config as pruning_problems  # each method's own keys (benchmark/pruning)

    for key, value, allowed in pruning_problems(cfg.pruning, model):
        raise ConfigError(f"{key}={value!r} does not fit model.name={cfg.model.name!r}; allowed: {allowed}")
