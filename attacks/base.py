"""The seam every threat plugs into."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn

from benchmark.data import Dataset


@dataclass
class ThreatReport:
    metrics: dict[str, float] = field(default_factory=dict)
    # (name, value, step): curves with a natural x-axis (e.g. robust accuracy vs eps in milli-eps)
    curves: list[tuple[str, float, int]] = field(default_factory=list)
    # artifact file name -> matplotlib figure (e.g. a few poisoned/triggered examples), logged with mlflow.log_figure
    figures: dict[str, object] = field(default_factory=dict)


class Threat:
    """Base threat: leaves training alone. Poisoning/backdoor threats override the two training hooks.

    A threat kind is a subclass in a module of attacks/ registered with `@THREATS.register(kind)`; its config
    keys are declared in benchmark/schema.py (the schema is checked before torch is imported)."""

    def __init__(self, cfg):
        self.cfg = cfg

    @classmethod
    def check_config(cls, cfg) -> None:
        """Checks across keys that the schema cannot state (benchmark/validate.py calls it before any compute)."""

    @classmethod
    def class_keys(cls, cfg) -> list[str]:
        """The keys that name a class: benchmark/validate.py checks them against the data's classes."""
        return []

    def training_data_key(self) -> dict | None:
        """The part of the config that changes the training data; None when the data is clean.

        It enters the dense model's cache key, so a clean dense model is shared by every evasion threat."""
        return None

    def poison_training_set(self, data: Dataset, seed: int) -> Dataset:
        return data

    # Where the (possibly) poisoned set is used; see attacks/poisoning.py for `threat.stage` / `threat.finetune_data`.
    def dense_training_set(self, clean: Dataset, poisoned: Dataset) -> Dataset:
        return poisoned

    def finetune_set(self, clean: Dataset, poisoned: Dataset) -> Dataset:
        return poisoned

    def pruning_finetune_set(self, clean: Dataset, poisoned: Dataset) -> Dataset:
        """Fine-tuning inside a pruning schedule, before the "just pruned" point."""
        return self.finetune_set(clean, poisoned)

    def finetune_data_key(self) -> dict | None:
        """What the fine-tune data was, when not the clean set: enters the pruned model's cache key."""
        return None

    def finetune_tracker(self, data: Dataset, device: torch.device, seed: int):
        """None, or model -> {metric: value}, evaluated after pruning and after every fine-tune epoch."""
        return None

    def reference_metrics(self, reference: nn.Module, model_metrics: dict, data: Dataset, device: torch.device,
                          seed: int) -> dict[str, float] | None:
        """None, or metrics against the clean model at the same method and sparsity (`reference` is built only
        when this returns metrics for it: `wants_clean_reference`)."""
        return None

    def wants_clean_reference(self) -> bool:
        return False

    def effectiveness(self, dense_for, data: Dataset, device: torch.device, seed: int) -> dict[str, float]:
        """Whether the attack works on the dense, undefended model: `threat/dense_success` and `threat/effective`
        (1.0 when the success reaches `threat.effective_threshold`); {} for a threat without that judgement.
        `dense_for(training_data_key)` is the cell's dense model trained on the data of that key (None: clean)."""
        return {}

    def evaluate(self, model: nn.Module, data: Dataset, device: torch.device, seed: int) -> ThreatReport:
        raise NotImplementedError
