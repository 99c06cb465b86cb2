"""As l1_filter with the filters' L2 norm (the variant Li et al. 2017 also report; He et al. 2018's SFP norm)."""
from __future__ import annotations

from typing import Literal

from benchmark.pruning import PRUNERS, PruningConfig


class L2Filter(PruningConfig):
    method: Literal["l2_filter"]


@PRUNERS.register("l2_filter", config=L2Filter, structured=True)
def l2_filter(model, cfg, ctx):
    import torch_pruning as tp

    from benchmark.pruning.structured import prune_to_sparsity

    return prune_to_sparsity(model, cfg, ctx, tp.importance.MagnitudeImportance(p=2, group_reduction="first"))
