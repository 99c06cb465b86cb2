"""LAMP (Lee et al. 2021): magnitude scores rescaled per layer, so that one GLOBAL ranking sets each layer's own
sparsity. Structured here (channels), as torch-pruning implements it."""
from __future__ import annotations

from typing import Literal

from benchmark.pruning import PRUNERS, PruningConfig


class Lamp(PruningConfig):
    method: Literal["lamp"]


@PRUNERS.register("lamp", config=Lamp, structured=True)
def lamp(model, cfg, ctx):
    import torch_pruning as tp

    from benchmark.pruning.structured import prune_to_sparsity

    return prune_to_sparsity(model, cfg, ctx, tp.importance.LAMPImportance(p=2), global_pruning=True)
