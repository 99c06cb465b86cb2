"""The same fraction of smallest-|w| weights removed in every prunable layer (oneshot or iterative)."""
from __future__ import annotations

from typing import Literal

from benchmark.checks import ORDER, SCHEDULE, STEPS
from benchmark.pruning import PRUNERS, PruningConfig


class MagnitudeLayerwise(PruningConfig):
    method: Literal["magnitude_layerwise"]
    schedule: SCHEDULE
    steps: STEPS
    order: ORDER  # iterative: all layers each step, or one layer per step from the classifier back


@PRUNERS.register("magnitude_layerwise", config=MagnitudeLayerwise)
def magnitude_layerwise(model, cfg, ctx):
    from benchmark.pruning.common import PruneOutcome
    from benchmark.pruning.scored import prune_unstructured

    return PruneOutcome(model, structured=False, info=prune_unstructured(model, cfg, ctx, "magnitude", "layerwise"))
