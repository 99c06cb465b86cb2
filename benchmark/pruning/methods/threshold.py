"""The seed article's rule (§5): per layer, zero every weight with |w| <= rate * max|w|.

`rate` is not a sparsity: the fraction removed depends on each layer's weight distribution, so the cell logs
both `pruning/threshold_rate` and the achieved sparsity. `rate` is the method's amount (`amount_key`): a grid that
sweeps `pruning.sparsity` sets it (`rate: ${.sparsity}`), then `sparsity` is normalised to 0, and the run name,
tables and figures show the rate as a rate. (The seed's Keras code then trains without masks,
letting pruned weights regrow; here the mask is kept through fine-tuning, as for every method.)
torch.nn.utils.prune has no threshold rule, so the mask is computed here and applied with custom_from_mask.
"""
from __future__ import annotations

from typing import Literal

from benchmark.checks import UNIT
from benchmark.pruning import PRUNERS, PruningConfig


class Threshold(PruningConfig):
    method: Literal["threshold"]
    rate: UNIT  # zero |w| <= rate * max|w| per layer


@PRUNERS.register("threshold", config=Threshold, amount_key="rate")
def threshold(model, cfg, ctx):
    from torch.nn.utils import prune as torch_prune

    from benchmark.pruning.common import PruneOutcome, prunable_layers

    rate = float(cfg.rate)
    for _, module in prunable_layers(model, cfg.prune_head):
        weight = module.weight.detach()
        torch_prune.custom_from_mask(module, "weight", mask=weight.abs() > rate * weight.abs().max())
    return PruneOutcome(model, structured=False, info={"pruning/threshold_rate": rate})
