"""Adversarial Neuron Pruning (Wu & Wang, NeurIPS 2021): the mask optimisation.

Every neuron (benchmark/pruning/neurons.py) gets a mask m in [0, 1] on its weight part and a perturbation
(delta on the weight part, xi on the bias) in [-eps, eps]. Per mini-batch of the defender's clean images: the
perturbation starts uniform in the eps-ball and takes `noise_steps` signed-gradient ascent steps of eps / steps on
the loss (clipped back to the ball); then the masks take one SGD step (momentum 0.9) on
alpha * loss(masked) + (1 - alpha) * loss(masked and perturbed), and are clipped to [0, 1]. Backdoor neurons are
the ones whose small perturbation flips predictions: their masks fall. Model weights are frozen. `train_mode`
runs BatchNorm on batch statistics, as the reference code does (the running statistics are restored afterwards);
otherwise the model runs as deployed (running statistics).

ART has no ANP (its defences are detectors, trainers and transformers); torch-pruning has no mask learning of this
kind: the ~40 lines below are the method.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from benchmark.pruning.neurons import Modulation, NeuronLayer


def learn_masks(model: nn.Module, layers: list[NeuronLayer], x: torch.Tensor, y: torch.Tensor, *, eps: float,
                alpha: float, lr: float, iterations: int, noise_steps: int, batch_size: int, seed: int,
                train_mode: bool) -> list[torch.Tensor]:
    """ANP's neuron masks (one tensor per layer of `layers`, on the CPU) after `iterations` mini-batches."""
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
    done = 0
    while True:
        order = torch.randperm(n, generator=generator)
        for start in range(0, n, batch_size):
            if done == iterations:
                return
            yield order[start:start + batch_size]
            done += 1
