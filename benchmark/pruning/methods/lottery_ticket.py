"""Lottery ticket (Frankle & Carbin 2019; rewinding to an early epoch: Frankle et al. 2020).

Iterative magnitude pruning over `rounds` rounds, each removing the same share of the remaining weights
(geometric, reaching `sparsity` at the last round), with the surviving weights rewound to their values at
initialisation (`rewind_epoch: 0`) or after `rewind_epoch` epochs of the dense training, then retrained.
Round 1 prunes the trained dense model; every later round retrains the rewound ticket (train.epochs -
rewind_epoch epochs) before pruning again; the final ticket is retrained the same way (and then fine-tuned like
every cell). Magnitude ranking is global, as in the paper's conv experiments.
"""
from __future__ import annotations

from typing import Literal

from benchmark.checks import SCOPE, whole
from benchmark.pruning import PRUNERS, PruningConfig


class LotteryTicket(PruningConfig):
    method: Literal["lottery_ticket"]
    rounds: whole(1, 50)
    rewind_epoch: whole(0, 10_000)  # < train.epochs
    scope: SCOPE


@PRUNERS.register("lottery_ticket", config=LotteryTicket)
def lottery_ticket(model, cfg, ctx):
    from benchmark.pruning.common import PruneOutcome, needs_training, prunable_layers
    from benchmark.pruning.rewind import rewind, rewind_point
    from benchmark.pruning.scored import current_weight, prune_by_scores, step_amounts

    needs_training(ctx, "lottery_ticket")
    rounds, rewind_epoch = int(cfg.rounds), int(cfg.rewind_epoch)
    start = rewind_point(model, ctx, rewind_epoch)  # before masks exist: a plain state_dict
    layers = [m for _, m in prunable_layers(model, cfg.prune_head)]
    retrain_epochs = max(ctx.train_epochs - rewind_epoch, 0)
    for round_ in range(rounds):
        if round_ > 0:
            ctx.train(model, retrain_epochs)
        prune_by_scores(layers, [current_weight(m).abs() for m in layers], step_amounts(float(cfg.sparsity), rounds)[0],
                        cfg.get("scope", "global"))
        rewind(model, start)
    ctx.train(model, retrain_epochs)
    return PruneOutcome(model, structured=False, info={"pruning/rounds": float(rounds),
                                                       "pruning/rewind_epoch": float(rewind_epoch)})
