"""Channel Lipschitzness-based Pruning (Zheng et al., ECCV 2022): the upper bound of each channel's Lipschitz
constant (UCLC). For a channel k of a conv followed by a BatchNorm, the largest singular value of its kernel
reshaped to (input channels, kh * kw) times |gamma_k| / sqrt(running_var_k + eps); without BatchNorm, of the
kernel alone (a hidden Linear unit: the norm of its weight row). Backdoor channels have an unusually large UCLC.

ART has no CLP and torch-pruning ranks channels to shrink models, not by this bound: the few lines here are the
method (torch.linalg for the singular values).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from benchmark.pruning.neurons import NeuronLayer


@torch.no_grad()
def channel_lipschitz(layer: NeuronLayer) -> torch.Tensor:
    """The UCLC of every neuron of `layer` (benchmark/pruning/neurons.py), on the CPU."""
    if layer.conv is None and isinstance(layer.module, (nn.BatchNorm1d, nn.BatchNorm2d)):
        raise ValueError(f"CLP needs the conv or Linear layer before BatchNorm {layer.name!r}")
    kernel_owner = layer.conv if layer.conv is not None else layer.module
    weight = kernel_owner.weight.detach().cpu()
    kernels = weight.reshape(weight.shape[0], weight.shape[1], -1)  # (channels, inputs, kh * kw)
    bound = torch.linalg.matrix_norm(kernels, ord=2)
    if layer.conv is not None:
        bn = layer.module
        bound = bound * (bn.weight.detach().cpu() / (bn.running_var.detach().cpu() + bn.eps).sqrt()).abs()
    return bound


def above_mean_plus_std(bounds: torch.Tensor, u: float) -> torch.Tensor:
    """CLP's rule per layer: the channels whose UCLC exceeds mean + u * std (the layer's, unbiased std)."""
    if len(bounds) < 2:
        return torch.zeros(len(bounds), dtype=torch.bool)
    return bounds > bounds.mean() + u * bounds.std()
