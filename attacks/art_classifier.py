"""Wrapping a torch model as an ART estimator, the one place that knows ART's classifier API."""
from __future__ import annotations

import contextlib
import logging

import numpy as np
import torch
import torch.nn as nn
from art.estimators.classification import PyTorchClassifier

from benchmark import training


def art_classifier(model: nn.Module, input_shape: tuple[int, ...], num_classes: int, device: torch.device):
    return PyTorchClassifier(
        model=model,
        loss=nn.CrossEntropyLoss(),
        input_shape=input_shape,
        nb_classes=num_classes,
        clip_values=(0.0, 1.0),
        preprocessing=None,  # ART's default (0, 1) adds an identity standardisation (sub, div) to every gradient
        device_type="gpu" if device.type == "cuda" else "cpu",
    )


@contextlib.contextmanager
def frozen_parameters(model: nn.Module):
    """Attacks need input gradients only. ART's loss_gradient calls loss.backward(), which also fills every
    parameter's .grad unless parameters are frozen, a large share of ART's PGD time on CPU. Also skips ART's
    unlogged PGD success rate (see `_skip_unlogged_pgd_success_rate`) and runs conv weights in channels_last
    (`make perf` compares the wrapper with a plain torch loop). Float rounding then differs from the contiguous
    layout on near-zero gradients, so a few of PGD's pixels can step the other way."""
    # channels_last conv weights: the contiguous layout takes slower first-layer ReLU and conv backward kernels on
    # CPU; with channels_last, ART's PGD matches a plain torch loop in the same layout bit for bit.
    model.to(memory_format=torch.channels_last)
    try:
        with training.frozen_parameters(model), _skip_unlogged_pgd_success_rate():
            yield model
    finally:
        model.to(memory_format=torch.contiguous_format)


@contextlib.contextmanager
def _skip_unlogged_pgd_success_rate():
    """ART's PyTorch PGD ends with `logger.info("Success rate ...", compute_success(...))`: the argument, a full
    extra prediction pass over every image (`python -m benchmark.tools.perf --profile` shows its share), is computed
    even when the log level drops the line (cells set ART's logger to WARNING). ART has no switch for it, so while
    INFO is off its module-level `compute_success`, used only in that log line, is replaced. Results unchanged."""
    from art.attacks.evasion.projected_gradient_descent import projected_gradient_descent_pytorch as pgd

    if pgd.logger.isEnabledFor(logging.INFO):
        yield
        return
    original = pgd.compute_success
    pgd.compute_success = lambda *args, **kwargs: float("nan")
    try:
        yield
    finally:
        pgd.compute_success = original


def to_numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy().astype(np.float32)
