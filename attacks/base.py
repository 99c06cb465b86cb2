"""The seam every threat plugs into."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn as nn

from benchmark.data import Dataset
from benchmark.stages import TrainingSets


@dataclass
class ThreatReport:
    metrics: dict[str, float] = field(default_factory=dict)
    # (name, value, step): curves with a natural x-axis (e.g. robust accuracy vs eps in milli-eps)
    curves: list[tuple[str, float, int]] = field(default_factory=list)
    # artifact file name -> matplotlib figure (e.g. a few poisoned/triggered examples), logged with mlflow.log_figure
    figures: dict[str, object] = field(default_factory=dict)
    # artifact file name -> JSON-able dict (e.g. the evasion cell's per-image record), logged with mlflow.log_dict
    artifacts: dict[str, dict] = field(default_factory=dict)


@dataclass(frozen=True)
class TrainingPlan:
    """What a threat decides about a cell before any model is trained (attacks/poisoning.py explains the roles):
    - `sets`: the training data by role; `poisoned`: the training set with the poison (the clean one if none);
    - `dense_data_key` / `finetune_data_key`: what the dense / fine-tune data was when not the clean set (they
      enter the dense and the pruned model's cache keys);
    - `tracker`: None, or model -> {metric: value}, evaluated after pruning and after every fine-tune epoch;
    - `wants_clean_reference`: measure against the clean model at the same method and sparsity;
    - `report`: what building the poisoned set did (metrics such as poison/rate_applied, example figures)."""
    sets: TrainingSets
    poisoned: Dataset
    dense_data_key: dict | None = None
    finetune_data_key: dict | None = None
    tracker: Callable[[nn.Module], dict[str, float]] | None = None
    wants_clean_reference: bool = False
    report: ThreatReport = field(default_factory=ThreatReport)


class Threat:
    """Base threat: leaves training alone (training-data threats override `plan`).

    The cell asks a threat for its `plan` once, then has it `evaluate` the finished model, and asks for
    `reference_metrics` and `effectiveness`. A threat kind is a subclass in a module of attacks/ registered with
    `@THREATS.register(kind)`; its config keys are declared in benchmark/schema.py (checked before torch loads)."""

    def __init__(self, cfg):
        self.cfg = cfg

    @classmethod
    def check_config(cls, cfg) -> None:
        """Checks across keys that the schema cannot state (benchmark/validate.py calls it before any compute)."""

    @classmethod
    def check_classes(cls, cfg, num_classes: int) -> None:
        """Checks against the number of classes of the data (benchmark/validate.py calls it before any compute)."""

    @classmethod
    def class_keys(cls, cfg) -> list[str]:
        """The keys that name a class: benchmark/validate.py checks them against the data's classes."""
        return []

    def tags(self, model_name: str) -> dict[str, str]:
        """Run tags that say what the attacker knows: `threat/knowledge` is `white_box` when a clean-label
        attacker's proxy is the victim's twin (its architecture, `proxy.seed_offset` 0), `transfer` otherwise;
        nothing for a threat without a proxy."""
        proxy = self.cfg.get("proxy")
        if proxy is None:
            return {}
        twin = proxy.model == model_name and int(proxy.seed_offset) == 0
        return {"threat/knowledge": "white_box" if twin else "transfer"}

    def plan(self, data: Dataset, device: torch.device, seed: int) -> TrainingPlan:
        """Everything the threat decides about the cell's training, fixed before any model is trained."""
        return TrainingPlan(TrainingSets.clean(data), poisoned=data)

    def reference_metrics(self, reference: nn.Module, model_metrics: dict, data: Dataset, device: torch.device,
                          seed: int) -> dict[str, float] | None:
        """Metrics against the clean model at the same method and sparsity (called when the plan says
        `wants_clean_reference`)."""
        return None

    def effectiveness(self, dense_for, data: Dataset, device: torch.device, seed: int) -> dict[str, float]:
        """Whether the attack works on the dense, undefended model: `threat/dense_success` and `threat/effective`
        (1.0 when the success reaches `threat.effective_threshold`); {} for a threat without that judgement.
        `dense_for(training_data_key)` is the cell's dense model trained on the data of that key (None: clean)."""
        return {}

    def evaluate(self, model: nn.Module, data: Dataset, device: torch.device, seed: int) -> ThreatReport:
        raise NotImplementedError
