"""Control: the same fraction of weights per layer, chosen uniformly at random (seeded)."""
from __future__ import annotations

from typing import Literal

from benchmark.pruning import PRUNERS, PruningConfig


class RandomUnstructured(PruningConfig):
    method: Literal["random"]


@PRUNERS.register("random", config=RandomUnstructured)
def random_unstructured(model, cfg, ctx):
    import torch
    from torch.nn.utils import prune as torch_prune

    from benchmark.pruning.common import PruneOutcome, prunable_layers

    torch.manual_seed(ctx.seed)
    for _, module in prunable_layers(model, cfg.prune_head):
        torch_prune.random_unstructured(module, "weight", amount=float(cfg.sparsity))
    return PruneOutcome(model, structured=False)
