"""The dense baseline: nothing is removed (the cell still fine-tunes, like every other cell)."""
from __future__ import annotations

from typing import Literal

from benchmark.pruning import PRUNERS, PruningConfig


class NoPruning(PruningConfig):
    method: Literal["none"]


@PRUNERS.register("none", config=NoPruning, ignores_sparsity=True)
def no_pruning(model, cfg, ctx):
    from benchmark.pruning.common import PruneOutcome

    return PruneOutcome(model, structured=False)
