"""Fine-Pruning (Liu, Dolan-Gavitt & Garg 2018): remove the channels of the last conv layer that are least active
on clean data, then fine-tune (the fine-tune is the cell's usual one, in stages.pruned_model).

It is both a pruning method (`pruning=fine_pruning`) and the classic backdoor defence: backdoor behaviour tends to
live in channels that stay dormant on clean inputs. One implementation serves both uses.

The activations are read on the defender split only (clean images held out of every training stage,
benchmark/data.hold_out_defender), as the paper's defender reads its clean validation set.
`channel_fraction` (the paper's knob: share of the last layer's channels removed) when set; otherwise the number
of channels is chosen so that the fraction of prunable weights removed is as close to `sparsity` as the last
layer allows. The paper prunes until clean accuracy drops by a threshold; here the amount is a grid axis.
"""
from __future__ import annotations

from typing import Literal

from benchmark.checks import number
from benchmark.pruning import PRUNERS, PruningConfig


class FinePruning(PruningConfig):
    method: Literal["fine_pruning"]
    channel_fraction: number(0.0, 1.0, high_open=True) | None  # null: from sparsity


def head_reads_last_conv(model) -> str | None:
    """The classifier head must read the last conv's channels: hidden Linear layers in between would keep
    whatever the removed channels carried."""
    import torch.nn as nn

    hidden = sum(isinstance(m, nn.Linear) for m in model.modules()) - 1
    if hidden > 0:
        return f"a model whose classifier head reads the last conv's channels, not {hidden} hidden Linear layer(s)"
    return None


@PRUNERS.register("fine_pruning", config=FinePruning, structured=True, needs_conv=True, model_check=head_reads_last_conv,
                  ignores_sparsity=lambda cfg: cfg.get("channel_fraction") is not None)
def fine_pruning(model, cfg, ctx):
    from benchmark.pruning.common import PruneOutcome
    from benchmark.pruning.dormant import (channels_for_sparsity, last_conv, last_conv_activations,
                                           prune_dormant_channels)

    activations = last_conv_activations(model, ctx.defender[0])
    total = last_conv(model).out_channels
    fraction = cfg.get("channel_fraction")
    if fraction is not None:
        n_channels = min(int(round(float(fraction) * total)), total - 1)
    elif float(cfg.sparsity) == 0:
        n_channels = 0
    else:
        n_channels, _ = channels_for_sparsity(model, activations, float(cfg.sparsity), ctx, cfg.prune_head)
    removed = prune_dormant_channels(model, activations, n_channels, ctx.example_inputs)
    pruned_activation = float(activations[removed].mean()) if removed else 0.0
    return PruneOutcome(model, structured=True, info={
        "pruning/channel_ratio": n_channels / total,
        "pruning/channels_removed": float(n_channels),
        "pruning/removed_mean_activation": pruned_activation,
        "pruning/kept_mean_activation": float(activations[[i for i in range(total) if i not in set(removed)]].mean()),
    })
