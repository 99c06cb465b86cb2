"""Unstructured (weight-level) pruning with `torch.nn.utils.prune` masks."""
from __future__ import annotations

import torch
from torch.nn.utils import prune as torch_prune

from benchmark.pruning.common import PruneContext, PruneOutcome, prunable_layers


def no_pruning(model, cfg, ctx: PruneContext) -> PruneOutcome:
    return PruneOutcome(model, structured=False)


def magnitude_global(model, cfg, ctx: PruneContext) -> PruneOutcome:
    """Smallest-|w| weights over all prunable layers together (Han et al. 2015, global ranking)."""
    params = [(m, "weight") for _, m in prunable_layers(model, cfg.prune_head)]
    torch_prune.global_unstructured(params, pruning_method=torch_prune.L1Unstructured, amount=float(cfg.sparsity))
    return PruneOutcome(model, structured=False)


def magnitude_layerwise(model, cfg, ctx: PruneContext) -> PruneOutcome:
    """The same fraction of smallest-|w| weights removed in every prunable layer."""
    for _, module in prunable_layers(model, cfg.prune_head):
        torch_prune.l1_unstructured(module, "weight", amount=float(cfg.sparsity))
    return PruneOutcome(model, structured=False)


def random_unstructured(model, cfg, ctx: PruneContext) -> PruneOutcome:
    """Control: the same fraction of weights per layer, chosen uniformly at random (seeded)."""
    torch.manual_seed(ctx.seed)
    for _, module in prunable_layers(model, cfg.prune_head):
        torch_prune.random_unstructured(module, "weight", amount=float(cfg.sparsity))
    return PruneOutcome(model, structured=False)


def threshold(model, cfg, ctx: PruneContext) -> PruneOutcome:
    """The seed article's rule (§5): per layer, zero every weight with |w| <= rate * max|w|.

    `rate` is not a sparsity: the fraction removed depends on each layer's weight distribution, so the cell
    logs both `pruning/threshold_rate` and the achieved sparsity. (The seed's Keras code then trains without
    masks, letting pruned weights regrow; here the mask is kept through fine-tuning, as for every method.)
    torch.nn.utils.prune has no threshold rule, so the mask is computed here and applied with custom_from_mask.
    """
    rate = float(cfg.rate)
    for _, module in prunable_layers(model, cfg.prune_head):
        weight = module.weight.detach()
        torch_prune.custom_from_mask(module, "weight", mask=weight.abs() > rate * weight.abs().max())
    return PruneOutcome(model, structured=False, info={"pruning/threshold_rate": rate})
