"""SNIP (Lee et al. 2019): connection sensitivity |w * dL/dw| on one batch at INITIALISATION, then the sparse
network is trained from that init (for train.epochs, then the cell's fine-tune): pruning before training, as in
the paper. Of the trained dense model only the architecture is used; with `at_init: false` the scores are taken
on the trained model instead (then equal to `taylor` oneshot)."""
from __future__ import annotations

from typing import Literal

from benchmark.checks import SCOPE
from benchmark.pruning import PRUNERS, PruningConfig


class Snip(PruningConfig):
    method: Literal["snip"]
    scope: SCOPE
    at_init: bool


@PRUNERS.register("snip", config=Snip)
def snip(model, cfg, ctx):
    from benchmark.pruning.common import PruneOutcome, needs_training
    from benchmark.pruning.scored import prune_unstructured

    if not cfg.at_init:
        return PruneOutcome(model, structured=False, info=prune_unstructured(model, cfg, ctx, "snip", cfg.scope))
    needs_training(ctx, "snip")
    model.load_state_dict(ctx.initial_state)
    info = prune_unstructured(model, cfg, ctx, "snip", cfg.scope)
    ctx.train(model, ctx.train_epochs)
    return PruneOutcome(model, structured=False, info={**info, "pruning/trained_from_init_epochs": float(ctx.train_epochs)})
