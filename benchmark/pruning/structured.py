"""Structured pruning with torch-pruning: channels/neurons physically removed, tensors really shrink.

Every method is one torch-pruning importance; they share the conversion from `sparsity` (fraction of prunable
weights removed) to torch-pruning's channel ratio, found by bisection (`_ratio_for_sparsity`).
"""
from __future__ import annotations

import copy
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch_pruning as tp

from benchmark.pruning.common import PruneContext, PruneOutcome
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
    from benchmark.measure import achieved_sparsity, layer_weight_counts

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


def _structured(model, cfg, ctx: PruneContext, importance, global_pruning: bool = False,
                prepare: Prepare | None = None) -> PruneOutcome:
    if cfg.sparsity == 0:
        return PruneOutcome(model, structured=True, info={"pruning/channel_ratio": 0.0})
    ratio, _ = _ratio_for_sparsity(model, float(cfg.sparsity), importance, ctx, cfg.prune_head, global_pruning, prepare)
    pruned = _prune_channels(model, ratio, importance, ctx, global_pruning, prepare)
    return PruneOutcome(pruned, structured=True, info={"pruning/channel_ratio": ratio})


def l1_filter(model, cfg, ctx: PruneContext) -> PruneOutcome:
    """Pruning Filters for Efficient ConvNets (Li et al. 2017): remove the filters with the smallest L1 norm.

    group_reduction='first' ranks a channel by the L1 norm of the layer's own filter, as the paper does, not by
    the whole coupled group. The same channel ratio applies to every layer (the paper's per-layer rule).
    """
    return _structured(model, cfg, ctx, tp.importance.MagnitudeImportance(p=1, group_reduction="first"))


def l2_filter(model, cfg, ctx: PruneContext) -> PruneOutcome:
    """As l1_filter with the filters' L2 norm (the variant Li et al. 2017 also report; He et al. 2018's SFP norm)."""
    return _structured(model, cfg, ctx, tp.importance.MagnitudeImportance(p=2, group_reduction="first"))


def _calibration_gradients(ctx: PruneContext) -> Prepare:
    """Loss gradients on the clean calibration batch (TaylorImportance reads `.grad`; deep copies drop it)."""
    x, y = ctx.calibration

    def prepare(model: nn.Module) -> None:
        model.zero_grad(set_to_none=True)
        was_training = model.training
        model.eval()  # BatchNorm uses its running statistics: the gradients of the model as it is deployed
        F.cross_entropy(model(x.to(ctx.example_inputs.device)), y.to(ctx.example_inputs.device)).backward()
        model.train(was_training)

    return prepare


def taylor_filter(model, cfg, ctx: PruneContext) -> PruneOutcome:
    """Molchanov et al. 2019: a channel's importance is the first-order Taylor estimate of the loss change when it
    is removed, |sum(w * dL/dw)| over the group, from one calibration batch."""
    importance = tp.importance.TaylorImportance(group_reduction="mean")
    return _structured(model, cfg, ctx, importance, prepare=_calibration_gradients(ctx))


def lamp(model, cfg, ctx: PruneContext) -> PruneOutcome:
    """LAMP (Lee et al. 2021): magnitude scores rescaled per layer, so that one GLOBAL ranking sets each layer's
    own sparsity. Structured here (channels), as torch-pruning implements it."""
    return _structured(model, cfg, ctx, tp.importance.LAMPImportance(p=2), global_pruning=True)


def slimming(model, cfg, ctx: PruneContext) -> PruneOutcome:
    """Network Slimming (Liu et al. 2017): channels ranked by their BatchNorm scale |gamma| across the whole
    network (global threshold). The L1 penalty that drives unneeded gammas to zero is applied during dense
    training (`train.slimming_l1`, stages.dense_model). Needs a model with BatchNorm (resnet20, vgg11_bn)."""
    return _structured(model, cfg, ctx, tp.importance.BNScaleImportance(), global_pruning=True)


def random_filter(model, cfg, ctx: PruneContext) -> PruneOutcome:
    """Control: the same channel ratio per layer as l1_filter, channels chosen at random (seeded per trial, so
    the bisection and the final step draw the same channels)."""
    return _structured(model, cfg, ctx, tp.importance.RandomImportance(),
                       prepare=lambda _: torch.manual_seed(ctx.seed))
