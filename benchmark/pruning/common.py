"""What every pruning method shares: which layers are prunable, the context they get, what they return, and how
much of a model they removed (the one definition of sparsity)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn as nn
from torch.nn.utils import prune as torch_prune

from models import classifier_head


@dataclass
class PruneContext:
    example_inputs: torch.Tensor  # one small batch, for torch-pruning's dependency graph and MAC counts
    calibration: tuple[torch.Tensor, torch.Tensor]  # (x, y) batch of training data for data-aware methods
    seed: int
    # The defender split (x, y): clean images held out of every training stage, the only data the pruning-based
    # defences read (ANP's masks, Fine-Pruning's activations, every choice of an amount). None: not available.
    defender: tuple[torch.Tensor, torch.Tensor] | None = None
    # The pruning stage's training set (x, y), role `pruning_finetune` (what `finetune` trains on): for methods that
    # optimise on training data inside the pruner (HYDRA's scores). None: not available.
    pruning_train: tuple[torch.Tensor, torch.Tensor] | None = None
    # For methods with training inside (iterative schedules, lottery ticket, SNIP at init); None in plain use.
    initial_state: dict[str, torch.Tensor] | None = None  # the seeded init the dense model was trained from
    train: Callable[[nn.Module, int], list[float]] | None = None  # (model, epochs): cfg.train's loop, masks kept
    finetune: Callable[[nn.Module, int], list[float]] | None = None  # (model, epochs): cfg.finetune's loop
    train_epochs: int = 0  # cfg.train.epochs: how long the dense model was trained


def needs_training(ctx: PruneContext, method: str) -> None:
    if ctx.train is None or ctx.finetune is None or ctx.initial_state is None:
        raise ValueError(f"pruning.method={method!r} trains inside the pruner: PruneContext needs initial_state, "
                         "train and finetune (stages.pruned_model provides them)")


@dataclass
class PruneOutcome:
    model: nn.Module
    structured: bool
    info: dict[str, float] = field(default_factory=dict)  # method-specific numbers, logged as metrics


def prunable_layers(model: nn.Module, prune_head: bool = True) -> list[tuple[str, nn.Module]]:
    """Conv and Linear layers whose weights count toward sparsity (the classifier head per `prune_head`)."""
    head = classifier_head(model)
    return [
        (name, m)
        for name, m in model.named_modules()
        if isinstance(m, (nn.Conv2d, nn.Linear)) and (prune_head or m is not head)
    ]


def finalize(model: nn.Module) -> nn.Module:
    """Make masks permanent (`prune.remove`): the model becomes a plain one whose pruned weights are zero.

    Needed before copying, counting MACs (torch-pruning's counter deep-copies and chokes on masks) or caching.
    """
    for module in model.modules():
        if torch_prune.is_pruned(module):
            for hook in list(module._forward_pre_hooks.values()):
                if isinstance(hook, torch_prune.BasePruningMethod):
                    torch_prune.remove(module, hook._tensor_name)
    return model


_SIZE_ATTRS = {  # module type -> attribute name -> weight dimension that holds it
    nn.Conv2d: {"out_channels": 0, "in_channels": 1},
    nn.Linear: {"out_features": 0, "in_features": 1},
}


def load_state_into(model: nn.Module, state: dict[str, torch.Tensor]) -> nn.Module:
    """Load a (possibly structurally pruned) state_dict into a fresh dense model of the same architecture.

    Structured pruning shrinks tensors; instead of pickling the pruned module (unsafe to load), tensors are
    stored alone (safetensors) and the fresh model's tensors and size attributes are resized to match them.
    """
    for key, tensor in state.items():
        owner_name, _, attr = key.rpartition(".")
        owner = model.get_submodule(owner_name)
        current = getattr(owner, attr)
        if isinstance(current, nn.Parameter):
            setattr(owner, attr, nn.Parameter(tensor.clone(), requires_grad=current.requires_grad))
        else:
            owner._buffers[attr] = tensor.clone()
    for module in model.modules():
        if isinstance(module, nn.Conv2d) and module.groups > 1 and module.groups == module.in_channels:
            # depthwise: torch-pruning removes whole groups, each with out_channels / groups filters
            module.groups = module.weight.shape[0] // (module.out_channels // module.groups)
        for attr, dim in _SIZE_ATTRS.get(type(module), {}).items():
            setattr(module, attr, module.weight.shape[dim] * (module.groups if attr == "in_channels" else 1))
        if isinstance(module, nn.BatchNorm2d):
            module.num_features = module.weight.shape[0] if module.weight is not None else module.running_mean.shape[0]
    return model


def layer_weight_counts(model: nn.Module, prune_head: bool) -> dict[str, tuple[int, int]]:
    """name -> (non-zero weights, weights) for every prunable layer."""
    return {
        name: (int(torch.count_nonzero(m.weight)), m.weight.numel()) for name, m in prunable_layers(model, prune_head)
    }


def achieved_sparsity(dense_counts: dict[str, tuple[int, int]], model: nn.Module, prune_head: bool):
    """Fraction of the dense model's prunable weights that are zero or physically gone in `model`.

    One definition for masks and for removed channels, so that every method sits on one sparsity axis.
    Returns (overall, per-layer dict). Layer names survive torch-pruning, which resizes modules in place.
    """
    now = layer_weight_counts(model, prune_head)
    per_layer = {name: 1.0 - now.get(name, (0, 0))[0] / total for name, (_, total) in dense_counts.items()}
    kept = sum(now.get(name, (0, 0))[0] for name in dense_counts)
    return 1.0 - kept / sum(total for _, total in dense_counts.values()), per_layer
