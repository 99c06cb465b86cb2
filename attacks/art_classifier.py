"""Wrapping a torch model as an ART estimator, the one place that knows ART's classifier API."""
from __future__ import annotations

import contextlib

import numpy as np
import torch
import torch.nn as nn
from art.estimators.classification import PyTorchClassifier


def art_classifier(model: nn.Module, input_shape: tuple[int, ...], num_classes: int, device: torch.device):
    return PyTorchClassifier(
        model=model,
        loss=nn.CrossEntropyLoss(),
        input_shape=input_shape,
        nb_classes=num_classes,
        clip_values=(0.0, 1.0),
        device_type="gpu" if device.type == "cuda" else "cpu",
    )


@contextlib.contextmanager
def frozen_parameters(model: nn.Module):
    """Attacks need input gradients only. ART's loss_gradient calls loss.backward(), which also fills every
    parameter's .grad unless parameters are frozen: measured to be a large share of ART's PGD overhead on CPU."""
    flags = [p.requires_grad for p in model.parameters()]
    model.requires_grad_(False)
    model.eval()
    try:
        yield model
    finally:
        for p, flag in zip(model.parameters(), flags):
            p.requires_grad_(flag)


def to_numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy().astype(np.float32)
