"""Pruning registry: `pruning.method` -> function(model, cfg, ctx) -> PruneOutcome.

Unstructured methods attach `torch.nn.utils.prune` masks (kept through fine-tuning, made permanent by
`finalize`); structured methods physically remove channels with torch-pruning's dependency graph.
"""
from __future__ import annotations

from benchmark.pruning.common import PruneContext, PruneOutcome, finalize, load_state_into, prunable_layers
from benchmark.pruning.structured import l1_filter
from benchmark.pruning.unstructured import magnitude_global, magnitude_layerwise, no_pruning, random_unstructured, threshold

PRUNERS = {
    "none": no_pruning,
    "magnitude_global": magnitude_global,
    "magnitude_layerwise": magnitude_layerwise,
    "random": random_unstructured,
    "threshold": threshold,
    "l1_filter": l1_filter,
}

STRUCTURED = {"l1_filter"}


def prune(model, cfg, ctx: PruneContext) -> PruneOutcome:
    if cfg.method not in PRUNERS:
        raise ValueError(f"pruning.method={cfg.method!r} is unknown; allowed: {sorted(PRUNERS)}")
    return PRUNERS[cfg.method](model, cfg, ctx)


__all__ = ["PRUNERS", "STRUCTURED", "PruneContext", "PruneOutcome", "prune", "finalize", "load_state_into", "prunable_layers"]
