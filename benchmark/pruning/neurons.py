"""Neurons as the pruning-based backdoor defences (ANP, CLP) see them: which channels they are, how one is scaled
or switched off, and how a defender picks the amount from its clean defender split.

A neuron is one output channel of a BatchNorm layer in a model with BatchNorm (its scale gamma is what ANP masks
and CLP combines with the conv registered last before it), or, in a model without BatchNorm, one output channel of
a conv layer or one output unit of a hidden Linear layer (a per-channel multiplier on its output). Switching a
neuron off zeroes its weight part (gamma, or the conv/Linear weights of that channel) and, where that conv's output
is read by this BatchNorm alone, the conv's filter too (it then computes the same), with `torch.nn.utils.prune`
masks (kept through fine-tuning, counted as sparsity); its bias stays unless the method also zeroes it (CLP does,
ANP does not). In a pre-activation net a BatchNorm can normalise a residual sum: the conv registered before it is
one of the sum's terms, whose output the residual path reads as well, so its filter is left alone.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Callable

import torch
import torch.fx
import torch.nn as nn
from torch.nn.utils import prune as torch_prune

from benchmark.data import seeded_indices
from models import classifier_head

_BATCHNORM = (nn.BatchNorm1d, nn.BatchNorm2d)


@dataclass(frozen=True)
class NeuronLayer:
    name: str
    module: nn.Module  # whose output channels are the neurons: a BatchNorm, or a Conv2d / hidden Linear without one
    conv: nn.Module | None = None  # with BatchNorm: the Conv2d (Linear for BatchNorm1d) registered last before it
    conv_feeds_only_it: bool = False  # the BatchNorm alone reads `conv`'s output: switching off masks its filter

    @property
    def size(self) -> int:
        return self.module.weight.shape[0]


def has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, _BATCHNORM) for m in model.modules())


def _sole_readers(model: nn.Module) -> set[tuple[str, str]]:
    """(layer name, BatchNorm name) where the BatchNorm's input is that layer's output and nothing else reads it,
    each called once, from torch.fx's graph of the forward; empty when symbolic tracing cannot follow the forward
    (data-dependent control flow): then no conv filter is masked, the reference code's own rule."""
    try:
        nodes = list(torch.fx.symbolic_trace(model).graph.nodes)
    except Exception:  # fx raises assorted error types on forwards it cannot trace
        return set()
    calls = Counter(node.target for node in nodes if node.op == "call_module")
    pairs = set()
    for node in nodes:
        source = node.args[0] if node.op == "call_module" and node.args else None
        if (isinstance(source, torch.fx.Node) and source.op == "call_module" and len(source.users) == 1
                and calls[source.target] == 1 and calls[node.target] == 1):
            pairs.add((source.target, node.target))
    return pairs


def batchnorm_pairs(model: nn.Module) -> tuple[list[NeuronLayer], list[str]]:
    """Each BatchNorm with the Conv2d (a BatchNorm1d: the Linear) registered last before it, the pairing of CLP's
    reference code (`named_modules()` order; a layer no BatchNorm follows is not paired), and what breaks it: a
    BatchNorm with no such layer before it, or with another channel count than that layer's outputs."""
    readers = _sole_readers(model)
    layers, unpaired, last = [], [], {}
    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            last[nn.Conv2d if isinstance(module, nn.Conv2d) else nn.Linear] = (name, module)
        elif isinstance(module, _BATCHNORM):
            kernel = nn.Conv2d if isinstance(module, nn.BatchNorm2d) else nn.Linear
            conv_name, conv = last.get(kernel, (None, None))
            if conv is None:
                unpaired.append(f"{name} (no {kernel.__name__} registered before it)")
            elif conv.weight.shape[0] != module.num_features:
                unpaired.append(f"{name} ({module.num_features} channels after {conv_name} with "
                                f"{conv.weight.shape[0]} outputs)")
                conv = None
            layers.append(NeuronLayer(name, module, conv, conv is not None and (conv_name, name) in readers))
    return layers, unpaired


def neuron_layers(model: nn.Module) -> list[NeuronLayer]:
    """The layers whose output channels are neurons (see the module docstring), in registration order."""
    if has_batchnorm(model):
        return [layer for layer in batchnorm_pairs(model)[0] if layer.module.affine]
    head = classifier_head(model)
    return [NeuronLayer(name, m) for name, m in model.named_modules()
            if isinstance(m, nn.Conv2d) or (isinstance(m, nn.Linear) and m is not head)]


def _channel_view(values: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    return values.view(1, -1, *([1] * (out.dim() - 2)))


def _bias(module: nn.Module, out: torch.Tensor) -> torch.Tensor:
    bias = getattr(module, "bias", None)
    return torch.zeros_like(out) if bias is None else _channel_view(bias, out)


class Modulation:
    """Scales every neuron's weight part by `weight[k]` and its bias by `bias[k]` (one tensor per layer) through
    forward hooks: out' = (out - b) * weight + b * bias. For a BatchNorm, out - b = gamma * x_hat (ANP's mask and
    noise on gamma and beta); for a conv or Linear, out - b is the weights' contribution."""

    def __init__(self, layers: list[NeuronLayer], weight: list[torch.Tensor], bias: list[torch.Tensor]):
        self.weight, self.bias = weight, bias
        self._handles = [layer.module.register_forward_hook(self._hook(i)) for i, layer in enumerate(layers)]

    def _hook(self, i: int):
        def hook(module, inputs, out):
            b = _bias(module, out)
            return (out - b) * _channel_view(self.weight[i], out) + b * _channel_view(self.bias[i], out)

        return hook

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()

    def __enter__(self) -> "Modulation":
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


def switch_off(layers: list[NeuronLayer], off: list[torch.Tensor], zero_bias: bool) -> int:
    """Mask the neurons flagged in `off` (a bool tensor per layer) for good: their weight part (and the filter of
    the conv whose output only that BatchNorm reads), and their bias when `zero_bias`. Returns how many were
    switched off."""
    for layer, flags in zip(layers, off):
        if not bool(flags.any()):
            continue
        keep = (~flags).to(layer.module.weight.dtype)
        for module in (layer.module, layer.conv if layer.conv_feeds_only_it else None):
            if module is None:
                continue
            names = ["weight"] + (["bias"] if zero_bias and getattr(module, "bias", None) is not None else [])
            for name in names:
                tensor = getattr(module, name)
                mask = keep.view(-1, *([1] * (tensor.dim() - 1))).expand_as(tensor).clone()
                torch_prune.custom_from_mask(module, name, mask=mask)
    return int(sum(int(flags.sum()) for flags in off))


@torch.no_grad()
def accuracy_with(model: nn.Module, layers: list[NeuronLayer], off: list[torch.Tensor], zero_bias: bool,
                  x: torch.Tensor, y: torch.Tensor, batch_size: int = 512) -> float:
    """Accuracy on (x, y) of `model` with the neurons flagged in `off` switched off (the model is not changed)."""
    keep = [(~flags).float() for flags in off]
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    correct = 0
    with Modulation(layers, keep, keep if zero_bias else [torch.ones_like(k) for k in keep]):
        for start in range(0, len(x), batch_size):
            logits = model(x[start:start + batch_size].to(device))
            correct += int((logits.argmax(1).cpu() == y[start:start + batch_size]).sum())
    model.train(was_training)
    return correct / len(x)


def split_defender(defender: tuple[torch.Tensor, torch.Tensor], val_fraction: float, seed: int):
    """Two disjoint seeded parts of the defender split: the one a defence fits on (ANP's masks) and the
    `val_fraction` held out to choose its amount. Returns ((x_fit, y_fit), (x_val, y_val)); each part has at
    least one image."""
    x, y = defender
    if len(y) < 2:
        raise ValueError(f"the defender split has {len(y)} image(s); fitting and choosing an amount need two "
                         "disjoint parts (data.defender_size)")
    order = seeded_indices(len(y), None, seed)
    n_val = min(max(1, round(val_fraction * len(y))), len(y) - 1)
    val, fit = order[:n_val], order[n_val:]
    return (x[fit], y[fit]), (x[val], y[val])


def largest_within_margin(candidates: list, accuracy: Callable[[object], float], baseline: float,
                          margin: float) -> tuple[object | None, float | None]:
    """The defender's rule: of `candidates`, ordered from least to most pruning, the last one whose held-out clean
    accuracy is at least `baseline - margin` (None when none is). Returns (candidate, its accuracy)."""
    chosen, chosen_acc = None, None
    for candidate in candidates:
        acc = accuracy(candidate)
        if acc >= baseline - margin:
            chosen, chosen_acc = candidate, acc
    return chosen, chosen_acc
