"""`model.normalize: {mean: [...], std: [...]}`: for a model trained on normalised inputs, the normalisation runs
inside the model, as its first step, so that data, attacks and budgets stay in [0, 1] pixel space (RobustBench
wraps its models the same way). It is a forward pre-hook rather than a wrapper module, so the model's state dict
(its checkpoint's keys) is unchanged."""
from __future__ import annotations

import torch
import torch.nn as nn

from benchmark.checks import ConfigError


class Normalization:
    """Forward pre-hook: the input batch (N x C x H x W) minus `mean`, divided by `std`, per channel."""

    def __init__(self, mean, std):
        self.mean, self.std = tuple(float(v) for v in mean), tuple(float(v) for v in std)

    def __call__(self, module: nn.Module, args: tuple) -> tuple:
        x, *rest = args
        shape = (1, len(self.mean), 1, 1)
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(shape)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(shape)
        return ((x - mean) / std, *rest)

    def __repr__(self) -> str:
        return f"Normalization(mean={list(self.mean)}, std={list(self.std)})"


def normalized(model: nn.Module, normalize, in_channels: int) -> nn.Module:
    """`model` with `normalize` (mean and std, one value per channel) applied to its input."""
    for key in ("mean", "std"):
        values = list(normalize[key])
        if len(values) != in_channels:
            raise ConfigError(f"model.normalize.{key}={values!r} has {len(values)} value(s); allowed: one per "
                              f"channel of the dataset ({in_channels})")
    model.register_forward_pre_hook(Normalization(normalize["mean"], normalize["std"]))
    return model
