"""Smallest-|w| weights over all prunable layers together (Han et al. 2015, global ranking)."""
from __future__ import annotations

from typing import Literal

from benchmark.checks import SCHEDULE, STEPS
from benchmark.pruning import PRUNERS, PruningConfig


class MagnitudeGlobal(PruningConfig):
    method: Literal["magnitude_global"]
    schedule: SCHEDULE  # iterative: `steps` rounds of prune -> fine-tune
    steps: STEPS


@PRUNERS.register("magnitude_global", config=MagnitudeGlobal)
def magnitude_global(model, cfg, ctx):
    from benchmark.pruning.common import PruneOutcome
    from benchmark.pruning.scored import prune_unstructured

    return PruneOutcome(model, structured=False, info=prune_unstructured(model, cfg, ctx, "magnitude", "global"))
