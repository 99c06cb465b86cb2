"""Lottery ticket (Frankle & Carbin 2019; rewinding to an early epoch: Frankle et al. 2020).

Iterative magnitude pruning over `rounds` rounds, each removing the same share of the remaining weights
(geometric, reaching `sparsity` at the last round), with the surviving weights rewound to their values at
initialisation (`rewind_epoch: 0`) or after `rewind_epoch` epochs of the dense training, then retrained.
torch.nn.utils.prune provides the masks; the rewind and the round loop are written here (no library has them).
"""
from __future__ import annotations

import copy

import torch
import torch.nn as nn
from torch.nn.utils import prune as torch_prune

from benchmark.pruning.common import PruneContext, PruneOutcome, needs_training, prunable_layers
from benchmark.pruning.scored import current_weight, prune_by_scores, step_amounts


@torch.no_grad()
def rewind(model: nn.Module, state: dict[str, torch.Tensor]) -> nn.Module:
    """Reset every parameter and buffer to `state` (a plain state_dict) while keeping the pruning masks:
    a masked weight's `weight_orig` takes the saved `weight`, so surviving weights equal their saved values
    exactly and pruned ones stay zero."""
    for key, tensor in model.state_dict(keep_vars=True).items():
        if key.endswith("_mask"):
            continue
        source = key[: -len("_orig")] if key.endswith("weight_orig") else key
        tensor.copy_(state[source])
    for module in model.modules():  # recompute `weight = weight_orig * mask` now, not at the next forward
        for hook in module._forward_pre_hooks.values():
            if isinstance(hook, torch_prune.BasePruningMethod):
                setattr(module, hook._tensor_name, hook.apply_mask(module))
    return model


def rewind_point(model: nn.Module, ctx: PruneContext, rewind_epoch: int) -> dict[str, torch.Tensor]:
    """The weights to rewind to: the seeded init, or the dense run after `rewind_epoch` epochs (recomputed by
    training from the same init with the same seed, which replays the dense run's first epochs exactly)."""
    state = {k: v.clone() for k, v in ctx.initial_state.items()}
    if rewind_epoch == 0:
        return state
    early = copy.deepcopy(model)
    early.load_state_dict(state)
    ctx.train(early, rewind_epoch)
    return {k: v.detach().clone() for k, v in early.state_dict().items()}


def lottery_ticket(model, cfg, ctx: PruneContext) -> PruneOutcome:
    """Round 1 prunes the trained dense model; every later round retrains the rewound ticket
    (train.epochs - rewind_epoch epochs) before pruning again; the final ticket is retrained the same way
    (and then fine-tuned like every cell). Magnitude ranking is global, as in the paper's conv experiments."""
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
