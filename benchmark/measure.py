"""Measurements that do not attack: sparsity (per layer and overall), parameters and MACs."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch_pruning as tp

from benchmark.pruning.common import prunable_layers


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


def nonzero_parameters(model: nn.Module) -> int:
    return sum(int(torch.count_nonzero(p)) for p in model.parameters())


def macs_and_params(model: nn.Module, example_inputs: torch.Tensor) -> tuple[int, int]:
    """torch-pruning's counter (dense MACs: unstructured zeros are still multiplied by dense kernels)."""
    macs, params = tp.utils.count_ops_and_params(model, example_inputs)
    return int(macs), int(params)
