"""Weight rewinding for the lottery ticket (methods/lottery_ticket.py) and random re-initialisation of a pruned
model (the `pruning.reinit` control): torch.nn.utils.prune provides the masks, torch's layers their initialisers;
the rewind is written here (no library has it)."""
from __future__ import annotations

import copy

import torch
import torch.nn as nn
from torch.nn.utils import prune as torch_prune

from benchmark.pruning.common import PruneContext


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
    _reapply_masks(model)
    return model


def _reapply_masks(model: nn.Module) -> None:
    """Recompute `weight = weight_orig * mask` now, not at the next forward."""
    for module in model.modules():
        for hook in module._forward_pre_hooks.values():
            if isinstance(hook, torch_prune.BasePruningMethod):
                setattr(module, hook._tensor_name, hook.apply_mask(module))


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


def reinit_seed(seed: int) -> int:
    """The seed of the re-initialisation: derived from the cell's seed, not the seed itself (the dense init's)."""
    import hashlib

    return int(hashlib.sha256(f"reinit:{seed}".encode()).hexdigest()[:8], 16)


@torch.no_grad()
def reinitialise(model: nn.Module, seed: int) -> nn.Module:
    """OpenLTH's "reinit" control: the pruned architecture and mask keep their shape, every parameter (and
    BatchNorm statistic) is drawn afresh by its layer's own initialiser (`reset_parameters`), seeded by
    `reinit_seed(seed)`; pruned weights stay zero. A masked layer's initialiser writes into its masked tensor,
    whose values then become the `<name>_orig` parameter."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(reinit_seed(seed))
        for module in model.modules():
            if not hasattr(module, "reset_parameters"):
                continue
            module.reset_parameters()
            for name, parameter in module.named_parameters(recurse=False):
                if name.endswith("_orig"):
                    parameter.copy_(getattr(module, name[: -len("_orig")]))
    _reapply_masks(model)
    return model
