"""Molchanov et al. 2019: a channel's importance is the first-order Taylor estimate of the loss change when it is
removed, |sum(w * dL/dw)| over the group, from one calibration batch."""
from __future__ import annotations

from typing import Literal

from benchmark.pruning import PRUNERS, PruningConfig


class TaylorFilter(PruningConfig):
    method: Literal["taylor_filter"]


@PRUNERS.register("taylor_filter", config=TaylorFilter, structured=True)
def taylor_filter(model, cfg, ctx):
    import torch_pruning as tp

    from benchmark.pruning.structured import calibration_gradients, prune_to_sparsity

    importance = tp.importance.TaylorImportance(group_reduction="mean")
    return prune_to_sparsity(model, cfg, ctx, importance, prepare=calibration_gradients(ctx))
