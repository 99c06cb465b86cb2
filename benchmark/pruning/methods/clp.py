"""Channel Lipschitzness-based Pruning (Zheng et al., ECCV 2022), a data-free backdoor defence: per layer, switch off
the channels whose upper bound of the Lipschitz constant (UCLC, below) exceeds mean + u * std.

Neurons are BatchNorm channels, or, in a model without BatchNorm, the output channels of its convs and hidden
Linear layers (benchmark/pruning/neurons.py). Switching one off zeroes its BatchNorm scale and shift, as the
reference code does (and the filter of the conv whose output only that BatchNorm reads, which computes the same);
the masks stay through fine-tuning and count as sparsity.

Pairing, as the reference code (rkteddy/channel-Lipschitzness-based-pruning, BackdoorBench's defense/clp.py) does
it: walking `named_modules()`, each BatchNorm2d takes the Conv2d registered last before it; a conv that no
BatchNorm follows is not considered. A model where a BatchNorm has no conv before it, or another channel count
than that conv's outputs (where the reference code fails), is rejected before compute (`model_check`). Caveat:
in a pre-activation net (PreActResNet-18, the wide ResNets) a block's bn2 pairs with its conv1, as in a
post-activation one, but its bn1 pairs with the previous block's conv2 (or its shortcut conv, registered after
conv2; the first block's with the stem conv), and that BatchNorm normalises the residual sum, not that conv's output
alone: the bound is the reference code's, not a Lipschitz bound of the channel. There only the BatchNorm's
channels are switched off, as in the reference code: the conv's output also runs along the residual path.

The amount (`selection`): `fixed` uses `u` (the paper's 3) and no data (`pruning/clean_images` = 0);
`validation` (the defender's rule) the smallest u of `u_grid` whose accuracy on the defender split (clean images
held out of every training stage, benchmark/data.hold_out_defender) is within `max_acc_drop` of the dense
model's. CLP can collapse clean accuracy at small u: report it as a curve over u (experiment=backdoor_defences_clp).
`pruning.sparsity` is not an input.

The UCLC of a channel k of a conv followed by a BatchNorm is the largest singular value of its kernel reshaped to
(input channels, kh * kw) times |gamma_k| / sqrt(running_var_k + eps) (the reference code leaves out the BatchNorm's
eps); without BatchNorm, of the kernel alone (a hidden Linear unit: the norm of its weight row). Backdoor channels
have an unusually large UCLC. ART has no CLP and torch-pruning ranks channels to shrink models, not by this bound:
the few lines here are the method (torch.linalg for the singular values). torch is imported inside the functions: the config checks import this module.
"""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from benchmark.checks import UNIT, number
from benchmark.pruning import PRUNERS, PruningConfig

U = number(-10.0, 100.0)


class CLP(PruningConfig):
    method: Literal["clp"]
    selection: Literal["fixed", "validation"]
    u: U  # selection=fixed: switch off channels above mean + u * std of their layer's bounds
    u_grid: Annotated[list[U], Field(min_length=1)]  # candidate u values (selection=validation)
    max_acc_drop: UNIT  # selection=validation: largest held-out clean accuracy drop allowed


def channel_lipschitz(layer):
    """The UCLC of every neuron of `layer` (a benchmark/pruning/neurons.py NeuronLayer), on the CPU."""
    import torch
    import torch.nn as nn

    if layer.conv is None and isinstance(layer.module, (nn.BatchNorm1d, nn.BatchNorm2d)):
        raise ValueError(f"CLP needs the conv or Linear layer before BatchNorm {layer.name!r}")
    with torch.no_grad():
        kernel_owner = layer.conv if layer.conv is not None else layer.module
        weight = kernel_owner.weight.detach().cpu()
        kernels = weight.reshape(weight.shape[0], weight.shape[1], -1)  # (channels, inputs, kh * kw)
        bound = torch.linalg.matrix_norm(kernels, ord=2)
        if layer.conv is not None:
            bn = layer.module
            bound = bound * (bn.weight.detach().cpu() / (bn.running_var.detach().cpu() + bn.eps).sqrt()).abs()
    return bound


def above_mean_plus_std(bounds, u: float):
    """CLP's rule per layer: the channels whose UCLC exceeds mean + u * std (the layer's, unbiased std)."""
    import torch

    if len(bounds) < 2:
        return torch.zeros(len(bounds), dtype=torch.bool)
    return bounds > bounds.mean() + u * bounds.std()


def conv_before_each_batchnorm(model) -> str | None:
    from benchmark.pruning.neurons import batchnorm_pairs

    _, unpaired = batchnorm_pairs(model)
    if unpaired:
        return ("a model whose every BatchNorm has as many channels as the conv registered last before it, or no "
                "BatchNorm at all (CLP pairs them in registration order); these break the pairing: "
                f"{', '.join(unpaired[:5])}")
    return None


def clp_label(cfg) -> str:
    """Run-name suffix: the fixed u (cells of a u curve share their sparsity, 0)."""
    return f"+u{float(cfg.u):g}" if cfg.selection == "fixed" else ""


@PRUNERS.register("clp", config=CLP, ignores_sparsity=True, needs_conv=True, model_check=conv_before_each_batchnorm,
                  variant_label=clp_label)
def clp(model, cfg, ctx):
    from benchmark.pruning.common import PruneOutcome
    from benchmark.pruning.neurons import accuracy_with, largest_within_margin, neuron_layers, switch_off

    layers = neuron_layers(model)
    bounds = [channel_lipschitz(layer) for layer in layers]
    above = lambda u: [above_mean_plus_std(b, u) for b in bounds]
    info = {"pruning/clean_images": 0.0}
    if cfg.selection == "fixed":
        u = float(cfg.u)
    else:
        x_val, y_val = ctx.defender
        accuracy = lambda u: accuracy_with(model, layers, above(u), True, x_val, y_val)
        dense_acc = accuracy(float("inf"))
        grid = sorted((float(u) for u in cfg.u_grid), reverse=True)  # from the least to the most pruning
        chosen, chosen_acc = largest_within_margin(grid, accuracy, dense_acc, float(cfg.max_acc_drop))
        u = float("inf") if chosen is None else chosen  # nothing meets the margin: nothing is switched off
        info.update({"pruning/clean_images": float(len(y_val)), "pruning/val_acc_dense": dense_acc,
                     "pruning/val_acc": dense_acc if chosen is None else chosen_acc,
                     "pruning/selection_met": float(chosen is not None)})
    pruned = switch_off(layers, above(u), zero_bias=True)
    total = sum(len(b) for b in bounds)
    info.update({"pruning/u": u if u != float("inf") else float("nan"), "pruning/neurons_pruned": float(pruned),
                 "pruning/neuron_fraction": pruned / total})
    return PruneOutcome(model, structured=False, info=info)
