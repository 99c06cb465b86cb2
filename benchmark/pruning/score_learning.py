"""HYDRA's importance-score optimisation (Sehwag et al., NeurIPS 2020), the engine of methods/hydra.py.

Every prunable weight w gets a score s, initialised from the weights as the reference code does (per layer
s = sqrt(6 / fan_in) * w / max|w|, close to Kaiming-uniform's scale). The forward pass uses w * m, where m keeps
the weights whose |s| is in the top share (per layer, or over all layers together); the gradient reaches the scores
straight through the top-k step (the estimator of Ramanujan et al.'s hidden networks, which HYDRA uses). The model's
own parameters are frozen; only the scores train, on the (adversarial) loss of `benchmark.training.fit`.

torch provides the parametrisation (`torch.nn.utils.parametrize`) and the final mask (`prune_by_scores`); the top-k
gate with its straight-through gradient is written here (neither torch nor torch-pruning has it).
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn as nn
from torch.nn.utils import parametrize


class _KeepAbove(torch.autograd.Function):
    """1 where |score| > threshold, else 0; the gradient passes straight through to |score|."""

    @staticmethod
    def forward(ctx, magnitude: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
        return (magnitude > threshold).to(magnitude.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad, None


class _Subnet(nn.Module):
    """The parametrisation weight -> weight * top-k mask of this layer's scores (thresholds set by `_Gate`)."""

    def __init__(self, scores: torch.Tensor):
        super().__init__()
        self.scores = nn.Parameter(scores)
        self.register_buffer("threshold", torch.tensor(-math.inf, device=scores.device), persistent=False)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * _KeepAbove.apply(self.scores.abs(), self.threshold)


def thresholds(magnitudes: list[torch.Tensor], amount: float, scope: str) -> list[float]:
    """Per layer, the value at or below which the smallest `amount` of the magnitudes fall (one ranking per layer,
    or one over all layers); as many as torch.nn.utils.prune removes, ties aside."""
    groups = [list(range(len(magnitudes)))] if scope == "global" else [[i] for i in range(len(magnitudes))]
    values = [0.0] * len(magnitudes)
    for group in groups:
        flat = torch.cat([magnitudes[i].flatten() for i in group])
        pruned = int(round(amount * flat.numel()))  # torch.nn.utils.prune's count
        value = float(flat.kthvalue(pruned).values) if pruned else -math.inf
        for i in group:
            values[i] = value
    return values


class _Gate:
    """Sets the subnets' thresholds before every forward pass of the model, from the scores as they are now."""

    def __init__(self, subnets: list[_Subnet], amount: float, scope: str):
        self.subnets, self.amount, self.scope = subnets, amount, scope

    @torch.no_grad()
    def __call__(self, *_) -> None:
        values = thresholds([s.scores.abs() for s in self.subnets], self.amount, self.scope)
        for subnet, value in zip(self.subnets, values):
            subnet.threshold.fill_(value)


def scaled_scores(weight: torch.Tensor) -> torch.Tensor:
    """HYDRA's score initialisation: sqrt(6 / fan_in) * w / max|w| (the layer's weights, rescaled)."""
    fan_in = weight[0].numel()  # in_channels / groups * kernel size, as torch's initialisers count it
    return math.sqrt(6.0 / fan_in) * weight.detach() / weight.detach().abs().max().clamp_min(1e-12)


def learn_scores(model: nn.Module, layers: list[nn.Module], amount: float, scope: str,
                 train: Callable[[nn.Module], object]) -> list[torch.Tensor]:
    """Each layer's learned scores, after `train(model)` optimised them (and nothing else) with the top-k subnetwork
    of `amount` pruned weights in the forward pass. The model comes back as it was: same parameters, none trainable
    that was not before, no parametrisation left."""
    trainable = {name: p.requires_grad for name, p in model.named_parameters()}
    model.requires_grad_(False)
    subnets = [_Subnet(scaled_scores(layer.weight)) for layer in layers]
    for layer, subnet in zip(layers, subnets):
        parametrize.register_parametrization(layer, "weight", subnet)
    hook = model.register_forward_pre_hook(_Gate(subnets, amount, scope))
    try:
        train(model)
    finally:
        hook.remove()
        for layer in layers:
            parametrize.remove_parametrizations(layer, "weight", leave_parametrized=False)
        for name, p in model.named_parameters():
            p.requires_grad_(trainable[name])
    return [subnet.scores.detach() for subnet in subnets]
