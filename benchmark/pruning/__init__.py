"""Pruning registry: `pruning.method` -> function(model, cfg, ctx) -> PruneOutcome.

Unstructured methods attach `torch.nn.utils.prune` masks (kept through fine-tuning, made permanent by
`finalize`); structured methods physically remove channels with torch-pruning's dependency graph.
"""
from __future__ import annotations

from benchmark.pruning.common import PruneContext, PruneOutcome, finalize, load_state_into, prunable_layers
from benchmark.pruning.fine_pruning import fine_pruning
from benchmark.pruning.lottery import lottery_ticket
from benchmark.pruning.scored import ORDERS, SCHEDULES, SCOPES
from benchmark.pruning.structured import l1_filter, l2_filter, lamp, random_filter, slimming, taylor_filter
from benchmark.pruning.unstructured import (magnitude_global, magnitude_layerwise, no_pruning, random_unstructured, snip,
                                            taylor, threshold)

PRUNERS = {
    "none": no_pruning,
    "magnitude_global": magnitude_global,
    "magnitude_layerwise": magnitude_layerwise,
    "random": random_unstructured,
    "threshold": threshold,
    "l1_filter": l1_filter,
    "snip": snip,
    "taylor": taylor,
    "l2_filter": l2_filter,
    "taylor_filter": taylor_filter,
    "lamp": lamp,
    "slimming": slimming,
    "random_filter": random_filter,
    "fine_pruning": fine_pruning,
    "lottery_ticket": lottery_ticket,
}

STRUCTURED = {"l1_filter", "l2_filter", "taylor_filter", "lamp", "slimming", "random_filter", "fine_pruning"}
CONV_ONLY = {"fine_pruning"}  # methods that need a conv layer
BATCHNORM_ONLY = {"slimming"}  # methods that rank BatchNorm scales


def check_config(cfg, model) -> list[tuple[str, object, str]]:
    """Method-specific problems with `cfg` (the pruning group) on `model`, as (key, value, allowed) triples;
    benchmark.validate turns them into ConfigErrors before any compute."""
    import torch.nn as nn

    problems = []
    if cfg.method in CONV_ONLY and not any(isinstance(m, nn.Conv2d) for m in model.modules()):
        problems.append(("pruning.method", cfg.method, "a model with a conv layer (seed_cnn, resnet20, vgg11_bn)"))
    if cfg.method in BATCHNORM_ONLY and not any(isinstance(m, nn.BatchNorm2d) for m in model.modules()):
        problems.append(("pruning.method", cfg.method, "a model with BatchNorm (resnet20, vgg11_bn)"))
    if "scope" in cfg and cfg.scope not in SCOPES:
        problems.append(("pruning.scope", cfg.scope, sorted(SCOPES)))
    if "schedule" in cfg and cfg.schedule not in SCHEDULES:
        problems.append(("pruning.schedule", cfg.schedule, sorted(SCHEDULES)))
    if "order" in cfg and cfg.order not in ORDERS:
        problems.append(("pruning.order", cfg.order, sorted(ORDERS)))
    if "steps" in cfg and not (isinstance(cfg.steps, int) and 1 <= cfg.steps <= 100):
        problems.append(("pruning.steps", cfg.steps, "an integer 1 <= steps <= 100"))
    if cfg.method == "lottery_ticket":
        if not (isinstance(cfg.rounds, int) and 1 <= cfg.rounds <= 50):
            problems.append(("pruning.rounds", cfg.rounds, "an integer 1 <= rounds <= 50"))
        if not (isinstance(cfg.rewind_epoch, int) and cfg.rewind_epoch >= 0):
            problems.append(("pruning.rewind_epoch", cfg.rewind_epoch, "an integer >= 0 (and < train.epochs)"))
    fraction = cfg.get("channel_fraction")
    if fraction is not None and not (isinstance(fraction, (int, float)) and 0 <= fraction < 1):
        problems.append(("pruning.channel_fraction", fraction, "null or 0 <= channel_fraction < 1"))
    return problems


def prune(model, cfg, ctx: PruneContext) -> PruneOutcome:
    if cfg.method not in PRUNERS:
        raise ValueError(f"pruning.method={cfg.method!r} is unknown; allowed: {sorted(PRUNERS)}")
    return PRUNERS[cfg.method](model, cfg, ctx)


__all__ = ["PRUNERS", "STRUCTURED", "check_config", "PruneContext", "PruneOutcome", "prune", "finalize", "load_state_into", "prunable_layers"]
