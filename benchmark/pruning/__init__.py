"""Pruning methods: `pruning.method` -> a function(model, cfg, ctx) -> PruneOutcome, registered by its module.

A method is one module in benchmark/pruning/methods/ (discovered, not listed) plus conf/pruning/<name>.yaml.
The module declares its config model (a `PruningConfig` with its own keys) and registers its function with
`@PRUNERS.register(name, config=..., structured=..., ...)`; the metadata tells the rest of the suite what it
needs to know (see `PRUNERS.metadata`). Method modules import torch inside their functions, so that a config
mistake is reported before torch is imported (benchmark/validate.py).

Unstructured methods attach `torch.nn.utils.prune` masks (kept through fine-tuning, made permanent by
`common.finalize`); structured methods physically remove channels with torch-pruning's dependency graph.
The shared machinery lives beside this file: common.py (context, outcome, prunable layers), scored.py (per-weight
scores, scopes, schedules), structured.py (channel pruning to a target sparsity), dormant.py and rewind.py.
"""
from __future__ import annotations

from benchmark.checks import SPARSITY, Group
from benchmark.registry import Registry


def variant_label(cfg) -> str:
    """The run-name suffix of a method's non-default variants (`+layerwise`, `+iterative3`)."""
    label = ""
    if cfg.get("scope") == "layerwise":
        label += "+layerwise"
    if cfg.get("schedule") == "iterative":
        label += f"+iterative{cfg.steps}"
    return label


def run_label(cfg) -> str:
    """The run-name suffix of a pruning config: the method's variants, then `+reinit` for the control."""
    return PRUNERS[cfg.method].variant_label(cfg) + ("+reinit" if cfg.get("reinit") else "")


def amount_key(cfg) -> str | None:
    """The key of the pruning config `cfg` that sets how much is pruned when it is not `sparsity` (threshold's
    `rate`), or None."""
    return PRUNERS[cfg.method].amount_key


def ignores_sparsity(cfg) -> bool:
    """Whether the pruning config `cfg` computes the same model whatever its `sparsity`."""
    ignores = PRUNERS[cfg.method].ignores_sparsity
    return bool(ignores(cfg) if callable(ignores) else ignores)


PRUNERS = Registry("pruning.method", "benchmark.pruning.methods", metadata={
    "structured": False,  # removes whole channels (the model shrinks) rather than masking weights
    "needs_conv": False,  # needs a conv layer in the model
    "needs_batchnorm": False,  # ranks BatchNorm scales
    # `sparsity` does not change what it computes (normalised to 0 before hashing): a bool, or pruning cfg -> bool
    "ignores_sparsity": False,
    # the key that sets how much is pruned instead of `sparsity` (threshold's `rate`): it keeps its value, sparsity
    # is normalised to 0 before hashing, and the run name, tables and figures show this key, never a sparsity
    "amount_key": None,
    "variant_label": variant_label,  # pruning cfg -> run-name suffix
    "model_check": None,  # model -> None, or what the method needs that the model lacks (checked before compute)
}, plugins="prunesec.pruning")


class PruningConfig(Group):
    """Keys every method has; a method's config model adds its own and a `method: Literal[name]` field."""
    sparsity: SPARSITY  # fraction of prunable weights removed
    prune_head: bool
    reinit: bool = False  # control: re-initialise the pruned model at random and retrain it (OpenLTH's reinit)


def prune(model, cfg, ctx):
    """Run `cfg.method` on `model` (a PruneOutcome); with `reinit`, the pruned model is then re-initialised at
    random (masks and shapes kept) and retrained for the dense model's epochs on its training set, the control
    that tells whether the surviving weights' values matter (OpenLTH's "reinit")."""
    outcome = PRUNERS[cfg.method].target(model, cfg, ctx)
    if cfg.get("reinit"):
        from benchmark.pruning.common import needs_training
        from benchmark.pruning.rewind import reinitialise

        needs_training(ctx, f"{cfg.method} with reinit")
        reinitialise(outcome.model, ctx.seed)
        ctx.train(outcome.model, ctx.train_epochs)
        outcome.info["pruning/reinit_epochs"] = float(ctx.train_epochs)
    return outcome


__all__ = ["PRUNERS", "PruningConfig", "amount_key", "prune", "run_label", "variant_label"]
