"""Network Slimming (Liu et al. 2017): channels ranked by their BatchNorm scale |gamma| across the whole network
(global threshold). The L1 penalty that drives unneeded gammas to zero is applied during dense training
(`train.slimming_l1`, stages.dense_model). Needs a model with BatchNorm (resnet20, vgg11_bn)."""
from __future__ import annotations

from typing import Literal

from benchmark.pruning import PRUNERS, PruningConfig


class Slimming(PruningConfig):
    method: Literal["slimming"]


@PRUNERS.register("slimming", config=Slimming, structured=True, needs_batchnorm=True)
def slimming(model, cfg, ctx):
    import torch_pruning as tp

    from benchmark.pruning.structured import prune_to_sparsity

    return prune_to_sparsity(model, cfg, ctx, tp.importance.BNScaleImportance(), global_pruning=True)
