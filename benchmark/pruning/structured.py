"""Structured pruning with torch-pruning: channels/neurons physically removed, tensors really shrink.

Every structured method (benchmark/pruning/methods/) is one torch-pruning importance; they share the conversion from `sparsity` (fraction of prunable
weights removed) to torch-pruning's channel ratio, found by bisection (`_ratio_for_sparsity`).
"""
from __future__ import annotations

import copy
from typing import Callable

import torch.nn as nn
import torch.nn.functional as F
import torch_pruning as tp

from benchmark.pruning.common import PruneContext, PruneOutcome, achieved_sparsity, layer_weight_counts
from models import classifier_head

Prepare = Callable[[nn.Module], None]  # readies a model copy for its importance (gradients, RNG) before a step


def _prune_channels(model, ratio: float, importance, ctx: PruneContext, global_pruning: bool = False,
                    prepare: Prepare | None = None):
    if prepare is not None:
        prepare(model)
    pruner = tp.pruner.MetaPruner(
        model,
        ctx.example_inputs,
        importance=importance,
        pruning_ratio=ratio,  # fraction of channels removed per layer (torch-pruning's knob)
        global_pruning=global_pruning,  # one ranking across layers (LAMP, Network Slimming) instead of per layer
        max_pruning_ratio=0.95 if global_pruning else 1.0,  # a global ranking must not empty a whole layer
        ignored_layers=[classifier_head(model)],  # never remove classes
    )
    pruner.step()
    model.zero_grad(set_to_none=True)
    return model


def _ratio_for_sparsity(model, target: float, importance, ctx: PruneContext, prune_head: bool,
                        global_pruning: bool = False, prepare: Prepare | None = None):
    """Bisect torch-pruning's per-layer channel ratio so that the fraction of prunable weights removed is as
    close to `target` as whole channels allow. Returns (ratio, achieved sparsity)."""
    dense = layer_weight_counts(model, prune_head)

    def sparsity_at(ratio: float) -> float:
        trial = _prune_channels(copy.deepcopy(model), ratio, importance, ctx, global_pruning, prepare)
        return achieved_sparsity(dense, trial, prune_head)[0]

    lo, hi, best = 0.0, 0.999, (0.0, 0.0)
    for _ in range(16):
        mid = (lo + hi) / 2
        achieved = sparsity_at(mid)
        if abs(achieved - target) < abs(best[1] - target):
            best = (mid, achieved)
        lo, hi = (mid, hi) if achieved < target else (lo, mid)
    return best


def prune_to_sparsity(model, cfg, ctx: PruneContext, importance, global_pruning: bool = False,
                      prepare: Prepare | None = None) -> PruneOutcome:
    """Remove channels ranked by `importance` (a torch-pruning importance) until the fraction of prunable weights
    removed is as close to `cfg.sparsity` as whole channels allow."""
    if cfg.sparsity == 0:
        return PruneOutcome(model, structured=True, info={"pruning/channel_ratio": 0.0})
    ratio, _ = _ratio_for_sparsity(model, float(cfg.sparsity), importance, ctx, cfg.prune_head, global_pruning, prepare)
    pruned = _prune_channels(model, ratio, importance, ctx, global_pruning, prepare)
    return PruneOutcome(pruned, structured=True, info={"pruning/channel_ratio": ratio})


def calibration_gradients(ctx: PruneContext) -> Prepare:
    """Loss gradients on the clean calibration batch (TaylorImportance reads `.grad`; deep copies drop it)."""
    x, y = ctx.calibration

    def prepare(model: nn.Module) -> None:
        model.zero_grad(set_to_none=True)
        was_training = model.training
        model.eval()  # BatchNorm uses its running statistics: the gradients of the model as it is deployed
        F.cross_entropy(model(x.to(ctx.example_inputs.device)), y.to(ctx.example_inputs.device)).backward()
        model.train(was_training)

    return prepare
