"""Unstructured (weight-level) pruning with `torch.nn.utils.prune` masks."""
from __future__ import annotations

import torch
from torch.nn.utils import prune as torch_prune

from benchmark.pruning.common import PruneContext, PruneOutcome, needs_training, prunable_layers
from benchmark.pruning.scored import prune_unstructured


def no_pruning(model, cfg, ctx: PruneContext) -> PruneOutcome:
    return PruneOutcome(model, structured=False)


def magnitude_global(model, cfg, ctx: PruneContext) -> PruneOutcome:
    """Smallest-|w| weights over all prunable layers together (Han et al. 2015, global ranking);
    `schedule: iterative` with `steps` prunes and fine-tunes in rounds."""
    return PruneOutcome(model, structured=False, info=prune_unstructured(model, cfg, ctx, "magnitude", "global"))


def magnitude_layerwise(model, cfg, ctx: PruneContext) -> PruneOutcome:
    """The same fraction of smallest-|w| weights removed in every prunable layer (oneshot or iterative)."""
    return PruneOutcome(model, structured=False, info=prune_unstructured(model, cfg, ctx, "magnitude", "layerwise"))


def taylor(model, cfg, ctx: PruneContext) -> PruneOutcome:
    """The seed's "gradient" importance: |w * dL/dw| on the clean calibration batch, on the TRAINED dense model
    (first-order Taylor, Molchanov et al. 2017, per weight); `scope: global|layerwise`, oneshot or iterative."""
    return PruneOutcome(model, structured=False, info=prune_unstructured(model, cfg, ctx, "taylor", cfg.scope))


def snip(model, cfg, ctx: PruneContext) -> PruneOutcome:
    """SNIP (Lee et al. 2019): connection sensitivity |w * dL/dw| on one batch at INITIALISATION, then the sparse
    network is trained from that init (for train.epochs, then the cell's fine-tune): pruning before training,
    as in the paper. Of the trained dense model only the architecture is used; with
    `at_init: false` the scores are taken on the trained model instead (then equal to `taylor` oneshot)."""
    if not cfg.at_init:
        return PruneOutcome(model, structured=False, info=prune_unstructured(model, cfg, ctx, "snip", cfg.scope))
    needs_training(ctx, "snip")
    model.load_state_dict(ctx.initial_state)
    info = prune_unstructured(model, cfg, ctx, "snip", cfg.scope)
    ctx.train(model, ctx.train_epochs)
    return PruneOutcome(model, structured=False, info={**info, "pruning/trained_from_init_epochs": float(ctx.train_epochs)})


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
