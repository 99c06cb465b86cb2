"""Structured pruning with torch-pruning: channels/neurons physically removed, tensors really shrink."""
from __future__ import annotations

import copy

import torch_pruning as tp

from benchmark.pruning.common import PruneContext, PruneOutcome
from models import classifier_head


def _prune_channels(model, ratio: float, importance, ctx: PruneContext):
    pruner = tp.pruner.MetaPruner(
        model,
        ctx.example_inputs,
        importance=importance,
        pruning_ratio=ratio,  # fraction of channels removed per layer (torch-pruning's knob)
        ignored_layers=[classifier_head(model)],  # never remove classes
    )
    pruner.step()
    return model


def _ratio_for_sparsity(model, target: float, importance, ctx: PruneContext, prune_head: bool):
    """Bisect torch-pruning's per-layer channel ratio so that the fraction of prunable weights removed is as
    close to `target` as whole channels allow. Returns (ratio, achieved sparsity)."""
    from benchmark.measure import achieved_sparsity, layer_weight_counts

    dense = layer_weight_counts(model, prune_head)

    def sparsity_at(ratio: float) -> float:
        return achieved_sparsity(dense, _prune_channels(copy.deepcopy(model), ratio, importance, ctx), prune_head)[0]

    lo, hi, best = 0.0, 0.999, (0.0, 0.0)
    for _ in range(16):
        mid = (lo + hi) / 2
        achieved = sparsity_at(mid)
        if abs(achieved - target) < abs(best[1] - target):
            best = (mid, achieved)
        lo, hi = (mid, hi) if achieved < target else (lo, mid)
    return best


def l1_filter(model, cfg, ctx: PruneContext) -> PruneOutcome:
    """Pruning Filters for Efficient ConvNets (Li et al. 2017): remove the filters with the smallest L1 norm.

    group_reduction='first' ranks a channel by the L1 norm of the layer's own filter, as the paper does, not by
    the whole coupled group. The same channel ratio applies to every layer (the paper's per-layer rule).
    """
    if cfg.sparsity == 0:
        return PruneOutcome(model, structured=True, info={"pruning/channel_ratio": 0.0})
    importance = tp.importance.MagnitudeImportance(p=1, group_reduction="first")
    ratio, _ = _ratio_for_sparsity(model, float(cfg.sparsity), importance, ctx, cfg.prune_head)
    return PruneOutcome(_prune_channels(model, ratio, importance, ctx), structured=True, info={"pruning/channel_ratio": ratio})
