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


class Threat:
    """Base threat: leaves training alone. Poisoning/backdoor threats override the two training hooks."""

    def __init__(self, cfg):
        self.cfg = cfg

    def training_data_key(self) -> dict | None:
        """The part of the config that changes the training data; None when the data is clean.

        It enters the dense model's cache key, so a clean dense model is shared by every evasion threat."""
        return None

    def poison_training_set(self, data: Dataset, seed: int) -> Dataset:
        return data

    def evaluate(self, model: nn.Module, data: Dataset, device: torch.device, seed: int) -> ThreatReport:
        raise NotImplementedError
