"""Control: the same channel ratio per layer as l1_filter, channels chosen at random (seeded per trial, so the
bisection and the final step draw the same channels)."""
from __future__ import annotations

from typing import Literal

from benchmark.pruning import PRUNERS, PruningConfig


class RandomFilter(PruningConfig):
    method: Literal["random_filter"]


@PRUNERS.register("random_filter", config=RandomFilter, structured=True)
def random_filter(model, cfg, ctx):
    import torch
    import torch_pruning as tp

    from benchmark.pruning.structured import prune_to_sparsity

    return prune_to_sparsity(model, cfg, ctx, tp.importance.RandomImportance(),
                             prepare=lambda _: torch.manual_seed(ctx.seed))
