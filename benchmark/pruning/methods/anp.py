"""Adversarial Neuron Pruning (Wu & Wang, NeurIPS 2021), a pruning-based backdoor defence: learn a mask per neuron
under adversarial neuron perturbations on a small clean set, then switch off the neurons with the smallest masks.

Neurons are BatchNorm channels, or, in a model without BatchNorm, the output channels of its convs and hidden
Linear layers (per-channel multipliers); see benchmark/pruning/neurons.py. Switching a neuron off zeroes its
weight part (gamma and the filter feeding it) and keeps its bias, as the reference code does; the masks stay
through fine-tuning and count as sparsity.

The amount (`selection`): `threshold` switches off the neurons whose mask is below `threshold` (the paper's 0.2);
`fraction` the `fraction` of all neurons with the smallest masks; `validation` (the defender's rule) the largest
threshold of `threshold_grid` whose accuracy on the held-out `val_fraction` of the defender split (disjoint from
the mask-learning part) is within `max_acc_drop` of the dense model's. ANP reads the defender split only (clean
images held out of every training stage, benchmark/data.hold_out_defender): the masks are learned on all of it
(`threshold`, `fraction`: the paper's protocol) or on the part not held out (`validation`). None uses the test
set. `pruning.sparsity` is not an input: the achieved sparsity is measured.

The mask learning (`learn_masks`): every neuron gets a mask m in [0, 1] on its weight part and a perturbation
(delta on the weight part, xi on the bias) in [-eps, eps]. Per mini-batch of the defender's clean images: the
perturbation starts uniform in the eps-ball and takes `noise_steps` signed-gradient ascent steps of eps / steps on
the loss (clipped back to the ball); then the masks take one SGD step (momentum 0.9) on
alpha * loss(masked) + (1 - alpha) * loss(masked and perturbed), and are clipped to [0, 1]. Backdoor neurons are
the ones whose small perturbation flips predictions: their masks fall. Model weights are frozen. `train_mode`
runs BatchNorm on batch statistics, as the reference code does (the running statistics are restored afterwards);
otherwise the model runs as deployed (running statistics).

ART has no ANP (its defences are detectors, trainers and transformers); torch-pruning has no mask learning of this
kind: the ~40 lines of `learn_masks` are the method. torch is imported inside the functions: the config checks
import this module.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import Field

from benchmark.checks import BATCH, LR, STEPS, UNIT, number, whole
from benchmark.pruning import PRUNERS, PruningConfig

if TYPE_CHECKING:
    import torch
    import torch.nn as nn

    from benchmark.pruning.neurons import NeuronLayer


class ANP(PruningConfig):
    method: Literal["anp"]
    eps: UNIT  # perturbation budget on each neuron's mask and bias (relative)
    alpha: UNIT  # weight of the unperturbed loss (1 - alpha: the perturbed one)
    mask_lr: LR
    iterations: whole(1, 1_000_000)  # mask-learning mini-batches
    noise_steps: STEPS  # signed-gradient ascent steps on the perturbation per mini-batch
    batch_size: BATCH
    batchnorm_mode: Literal["train", "eval"]  # BatchNorm statistics while the masks are learned
    selection: Literal["threshold", "fraction", "validation"]
    threshold: UNIT
    fraction: number(0.0, 1.0, high_open=True)  # share of all neurons switched off (selection=fraction)
    threshold_grid: Annotated[list[UNIT], Field(min_length=1)]  # candidate thresholds (selection=validation)
    max_acc_drop: UNIT  # selection=validation: largest held-out clean accuracy drop allowed
    val_fraction: number(0.0, 1.0, low_open=True, high_open=True)  # selection=validation: defender share held out


def anp_label(cfg) -> str:
    """Run-name suffix: a fixed amount (the validation rule, the default, has none)."""
    if cfg.selection == "threshold":
        return f"+threshold{float(cfg.threshold):g}"
    if cfg.selection == "fraction":
        return f"+fraction{float(cfg.fraction):g}"
    return ""


@PRUNERS.register("anp", config=ANP, ignores_sparsity=True, variant_label=anp_label)
def anp(model, cfg, ctx):
    import torch

    from benchmark.pruning.common import PruneOutcome
    from benchmark.pruning.neurons import (accuracy_with, largest_within_margin, neuron_layers, split_defender,
                                           switch_off)

    if cfg.selection == "validation":
        (x_fit, y_fit), (x_val, y_val) = split_defender(ctx.defender, float(cfg.val_fraction), ctx.seed)
    else:
        (x_fit, y_fit), (x_val, y_val) = ctx.defender, (None, None)
    layers = neuron_layers(model)
    masks = learn_masks(model, layers, x_fit, y_fit, eps=float(cfg.eps), alpha=float(cfg.alpha),
                        lr=float(cfg.mask_lr), iterations=int(cfg.iterations), noise_steps=int(cfg.noise_steps),
                        batch_size=int(cfg.batch_size), seed=ctx.seed,
                        train_mode=cfg.batchnorm_mode == "train")
    below = lambda threshold: [mask < threshold for mask in masks]
    info = {"pruning/clean_images": float(len(y_fit))}
    if cfg.selection == "fraction":  # the smallest masks over all neurons, ties broken by position
        flat = torch.cat(masks)
        smallest = torch.sort(flat, stable=True).indices[:int(round(float(cfg.fraction) * len(flat)))]
        off = torch.zeros(len(flat), dtype=torch.bool)
        off[smallest] = True
        off_per_layer = list(torch.split(off, [len(m) for m in masks]))
        threshold = float(flat[smallest].max()) if len(smallest) else 0.0
    else:
        if cfg.selection == "threshold":
            threshold = float(cfg.threshold)
        else:
            dense_acc = accuracy_with(model, layers, below(0.0), False, x_val, y_val)
            grid = sorted(float(t) for t in cfg.threshold_grid)  # from the least to the most pruning
            chosen, _ = largest_within_margin(
                grid, lambda t: accuracy_with(model, layers, below(t), False, x_val, y_val), dense_acc,
                float(cfg.max_acc_drop))
            info["pruning/selection_met"] = float(chosen is not None)
            threshold = 0.0 if chosen is None else chosen  # nothing meets the margin: nothing is switched off
            info.update({"pruning/val_images": float(len(y_val)), "pruning/val_acc_dense": dense_acc,
                         "pruning/val_acc": accuracy_with(model, layers, below(threshold), False, x_val, y_val)})
        off_per_layer = below(threshold)
    pruned = switch_off(layers, off_per_layer, zero_bias=False)
    total = sum(len(m) for m in masks)
    info.update({"pruning/threshold": threshold, "pruning/neurons_pruned": float(pruned),
                 "pruning/neuron_fraction": pruned / total,
                 "pruning/mask_mean": float(torch.cat(masks).mean())})
    return PruneOutcome(model, structured=False, info=info)


def learn_masks(model: nn.Module, layers: list[NeuronLayer], x: torch.Tensor, y: torch.Tensor, *, eps: float,
                alpha: float, lr: float, iterations: int, noise_steps: int, batch_size: int, seed: int,
                train_mode: bool) -> list[torch.Tensor]:
    """ANP's neuron masks (one tensor per layer of `layers`, on the CPU) after `iterations` mini-batches."""
    import torch
    import torch.nn.functional as F

    from benchmark.pruning.neurons import Modulation

    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    masks = [torch.ones(layer.size, device=device, requires_grad=True) for layer in layers]
    noise = [torch.zeros(layer.size, device=device, requires_grad=True) for layer in layers for _ in range(2)]
    noise_w, noise_b = noise[0::2], noise[1::2]
    mask_opt = torch.optim.SGD(masks, lr=lr, momentum=0.9)
    noise_opt = torch.optim.SGD(noise, lr=eps / noise_steps)
    frozen = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    was_training = model.training
    statistics = {k: v.clone() for k, v in model.state_dict().items() if "running_" in k or "num_batches" in k}
    model.train(train_mode)
    modulation = Modulation(layers, list(masks), [torch.ones_like(m) for m in masks])

    def loss_on(xb: torch.Tensor, yb: torch.Tensor, noisy: bool) -> torch.Tensor:
        """The loss with the masks, and the current perturbation when `noisy` (scales rebuilt for every forward,
        so the ascent steps' in-place updates reach the model)."""
        for i, mask in enumerate(masks):
            modulation.weight[i] = mask + noise_w[i] if noisy else mask
            modulation.bias[i] = 1 + noise_b[i] if noisy else torch.ones_like(mask)
        return F.cross_entropy(model(xb), yb)

    try:
        batches = _batches(len(y), batch_size, iterations, generator)
        for idx in batches:
            xb, yb = x[idx].to(device), y[idx].to(device)
            if eps > 0:
                with torch.no_grad():
                    for n in noise:
                        n.copy_((torch.rand(n.shape, generator=generator) * 2 - 1).mul_(eps))
                for _ in range(noise_steps):
                    noise_opt.zero_grad()
                    (-loss_on(xb, yb, noisy=True)).backward()
                    with torch.no_grad():
                        for n in noise:
                            n.grad.sign_()
                    noise_opt.step()
                    with torch.no_grad():
                        for n in noise:
                            n.clamp_(-eps, eps)
                loss_robust = loss_on(xb, yb, noisy=True)
            else:
                loss_robust = torch.zeros((), device=device)
            loss = alpha * loss_on(xb, yb, noisy=False) + (1 - alpha) * loss_robust
            mask_opt.zero_grad()
            loss.backward()
            mask_opt.step()
            with torch.no_grad():
                for mask in masks:
                    mask.clamp_(0.0, 1.0)
    finally:
        modulation.remove()
        model.load_state_dict(statistics, strict=False)  # BatchNorm statistics as they were
        model.train(was_training)
        for p, flag in zip(model.parameters(), frozen):
            p.requires_grad_(flag)
    return [mask.detach().cpu() for mask in masks]


def _batches(n: int, batch_size: int, iterations: int, generator: torch.Generator):
    """`iterations` mini-batches of shuffled epochs over n images (a DataLoader with shuffle=True)."""
    import torch

    done = 0
    while True:
        order = torch.randperm(n, generator=generator)
        for start in range(0, n, batch_size):
            if done == iterations:
                return
            yield order[start:start + batch_size]
            done += 1
