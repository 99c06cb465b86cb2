"""Pruning Filters for Efficient ConvNets (Li et al. 2017): remove the filters with the smallest L1 norm.

group_reduction="first" ranks a channel by the L1 norm of the layer's own filter, as the paper does, not by the
whole coupled group. The same channel ratio applies to every layer (the paper's per-layer rule).
"""
from __future__ import annotations

from typing import Literal

from benchmark.pruning import PRUNERS, PruningConfig


class L1Filter(PruningConfig):
    method: Literal["l1_filter"]


@PRUNERS.register("l1_filter", config=L1Filter, structured=True)
def l1_filter(model, cfg, ctx):
    import torch_pruning as tp

    from benchmark.pruning.structured import prune_to_sparsity

    return prune_to_sparsity(model, cfg, ctx, tp.importance.MagnitudeImportance(p=1, group_reduction="first"))
