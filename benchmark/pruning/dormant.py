"""Dormant channels of the last conv layer, for Fine-Pruning (methods/fine_pruning.py): their mean activation on
clean data, and their removal.

torch-pruning's ActivationImportance keeps only the LAST forward batch and ranks the inputs of every consumer layer;
Fine-Pruning needs the mean activation of one layer over the whole clean set, so the ranking is computed here
(hand-written, ~10 lines) and the channels are removed with torch-pruning's dependency graph, which also shrinks
everything coupled to them (the head's inputs, BatchNorms, residual partners).
"""
from __future__ import annotations

import copy

import torch
import torch.nn as nn
import torch_pruning as tp

from benchmark.pruning.common import PruneContext, achieved_sparsity, layer_weight_counts
from models import classifier_head


def last_conv(model: nn.Module) -> nn.Conv2d:
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError("fine_pruning needs a model with a conv layer (e.g. seed_cnn, resnet20, vgg11_bn)")
    return convs[-1]


@torch.no_grad()
def last_conv_activations(model: nn.Module, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Mean activation per channel of the last conv layer's feature map, as the classifier head receives it
    (after its ReLU, pooling and any residual sum), averaged over `x` and spatial positions. Shape (channels,).

    Reading the head's input makes this one definition for seed_cnn (flattened C x H x W map), resnet20 and
    vgg11_bn (globally pooled), whose last conv is followed by different modules.
    """
    channels = last_conv(model).out_channels
    head = classifier_head(model)
    seen: list[torch.Tensor] = []
    hook = head.register_forward_hook(lambda m, inputs, out: seen.append(inputs[0].detach().flatten(1)))
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        for start in range(0, len(x), batch_size):
            model(x[start : start + batch_size].to(device))
    finally:
        hook.remove()
        model.train(was_training)
    features = torch.cat(seen)
    if features.shape[1] % channels:
        raise ValueError(f"the head's {features.shape[1]} inputs are not a map of the last conv's {channels} channels")
    return features.view(len(features), channels, -1).mean(dim=(0, 2)).cpu()


def prune_dormant_channels(model: nn.Module, activations: torch.Tensor, n_channels: int,
                           example_inputs: torch.Tensor) -> list[int]:
    """Physically remove the `n_channels` least active channels of the last conv layer (in place). Returns
    their indices in the original layer. Ties are broken by index (stable sort), so the result is deterministic."""
    order = torch.sort(activations, stable=True).indices
    idxs = sorted(order[:n_channels].tolist())
    if idxs:
        graph = tp.DependencyGraph().build_dependency(model, example_inputs=example_inputs)
        group = graph.get_pruning_group(last_conv(model), tp.prune_conv_out_channels, idxs=idxs)
        group.prune()
    return idxs


def channels_for_sparsity(model, activations, target: float, ctx: PruneContext, prune_head: bool) -> tuple[int, float]:
    """Number of channels whose removal brings the fraction of prunable weights removed closest to `target`
    (bisection over whole channels; pruning only the last layer caps what is reachable)."""
    dense = layer_weight_counts(model, prune_head)
    total = last_conv(model).out_channels

    def sparsity_at(k: int) -> float:
        trial = copy.deepcopy(model)
        prune_dormant_channels(trial, activations, k, ctx.example_inputs)
        return achieved_sparsity(dense, trial, prune_head)[0]

    lo, hi = 0, total - 1  # keep at least one channel: the network must still produce logits
    while lo < hi:  # smallest k whose sparsity reaches the target
        mid = (lo + hi) // 2
        lo, hi = (mid + 1, hi) if sparsity_at(mid) < target else (lo, mid)
    candidates = [(abs(sparsity_at(k) - target), k) for k in {max(lo - 1, 0), lo}]
    k = min(candidates)[1]
    return k, sparsity_at(k)
