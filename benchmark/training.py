"""Seeded training, fine-tuning and evaluation loops over in-memory tensors."""
from __future__ import annotations

import contextlib
import math
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from benchmark.recipes import Recipe


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' but torch sees no CUDA device; allowed here: 'auto', 'cpu'")
    return torch.device(name)


def device_report(device: torch.device) -> tuple[dict[str, str], dict[str, float]]:
    """On CUDA: the GPU's name (tag `device_name`) and the peak GPU memory since the last reset, in MiB (metric
    `gpu/peak_mem_mb`); nothing on the CPU."""
    if device.type != "cuda":
        return {}, {}
    return ({"device_name": torch.cuda.get_device_name(device)},
            {"gpu/peak_mem_mb": torch.cuda.max_memory_allocated(device) / 2**20})


def seed_everything(seed: int) -> None:
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def fit(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    seed: int,
    device: torch.device,
    desc: str,
    extra_loss: Callable[[nn.Module], torch.Tensor] | None = None,
    perturb: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    on_epoch_end: Callable[[int, nn.Module], None] | None = None,
    make_optimizer: Callable[[list[nn.Parameter]], torch.optim.Optimizer] | None = None,
    recipe: Recipe = Recipe(),
    loss_fn: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> list[float]:
    """`recipe` (default: Adam, a constant learning rate `lr`, no augmentation) over seeded mini-batches, or the
    optimizer `make_optimizer` builds from the trainable parameters; returns the mean training loss per epoch.

    Each batch is augmented (`recipe.augment`), then perturbed (`perturb`, e.g. PGD adversarial training), then
    scored by `loss_fn(model, x, y)` (default: cross-entropy; TRADES brings its own) plus `extra_loss(model)`.

    Works unchanged on models with `torch.nn.utils.prune` masks: the mask is re-applied in every forward, so
    pruned weights stay exactly zero while the surviving ones are fine-tuned.
    """
    model.to(device).train()
    if device.type == "cuda":  # the whole set moves once: per-batch host-to-device copies would starve the GPU
        x, y = x.to(device), y.to(device)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = recipe.make_optimizer(trainable, lr) if make_optimizer is None else make_optimizer(trainable)
    scheduler, per_batch = recipe.make_scheduler(optimizer, lr, epochs, math.ceil(len(y) / batch_size)) \
        if epochs > 0 else (None, False)
    augment = recipe.augmentation(tuple(x.shape[-2:]))
    generator = torch.Generator().manual_seed(seed)
    losses = []
    bar = tqdm(range(epochs), desc=desc, unit="epoch", leave=False, disable=epochs == 0)
    for epoch in bar:
        order = torch.randperm(len(y), generator=generator)
        total, count = 0.0, 0
        for start in range(0, len(y), batch_size):
            idx = order[start : start + batch_size].to(x.device)
            xb, yb = x[idx].to(device), y[idx].to(device)
            if augment is not None:
                xb = augment(xb)
            if perturb is not None:  # e.g. adversarial training: the batch the loss sees (model -> attacked inputs)
                xb = perturb(model, xb, yb)
            loss = F.cross_entropy(model(xb), yb) if loss_fn is None else loss_fn(model, xb, yb)
            if extra_loss is not None:
                loss = loss + extra_loss(model)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if per_batch:
                scheduler.step()
            total += loss.item() * len(idx)
            count += len(idx)
        losses.append(total / max(count, 1))
        if scheduler is not None and not per_batch:
            scheduler.step()
        bar.set_postfix(epoch=f"{epoch + 1}/{epochs}", loss=f"{losses[-1]:.4f}")
        if on_epoch_end is not None:
            on_epoch_end(epoch, model)
    model.eval()
    return losses


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, device: torch.device, batch_size: int = 1000) -> torch.Tensor:
    """Logits for `x`, computed in eval mode in batches, returned on the CPU."""
    model.to(device).eval()
    return torch.cat([model(x[i : i + batch_size].to(device)).cpu() for i in range(0, len(x), batch_size)])


@contextlib.contextmanager
def frozen_parameters(model: nn.Module):
    """The model in eval mode with its parameters frozen (for input gradients only: attacks, attributions); the
    parameters' requires_grad flags are restored on exit."""
    flags = [p.requires_grad for p in model.parameters()]
    model.requires_grad_(False)
    model.eval()
    try:
        yield model
    finally:
        for p, flag in zip(model.parameters(), flags):
            p.requires_grad_(flag)


def accuracy_and_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device) -> tuple[float, float]:
    return logits_accuracy_and_loss(predict(model, x, device), y)


def logits_accuracy_and_loss(logits: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Accuracy and mean cross-entropy of logits already computed (`predict`) against labels `y`."""
    return (logits.argmax(1) == y).float().mean().item(), F.cross_entropy(logits, y).item()
