"""The seed's "gradient" importance: |w * dL/dw| on the clean calibration batch, on the TRAINED dense model
(first-order Taylor, Molchanov et al. 2017, per weight); `scope: global|layerwise`, oneshot or iterative."""
from __future__ import annotations

from typing import Literal

from benchmark.checks import ORDER, SCHEDULE, SCOPE, STEPS
from benchmark.pruning import PRUNERS, PruningConfig


class Taylor(PruningConfig):
    method: Literal["taylor"]
    scope: SCOPE
    schedule: SCHEDULE
    steps: STEPS
    order: ORDER


@PRUNERS.register("taylor", config=Taylor)
def taylor(model, cfg, ctx):
    from benchmark.pruning.common import PruneOutcome
    from benchmark.pruning.scored import prune_unstructured

    return PruneOutcome(model, structured=False, info=prune_unstructured(model, cfg, ctx, "taylor", cfg.scope))
