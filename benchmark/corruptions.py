"""Accuracy under common corruptions ("unexpected inputs"): Gaussian noise, Gaussian blur and contrast at a few
severities, applied with torchvision's tensor transforms to a fixed, seeded test subset.

Severity 0 is the clean input (the first point of each curve); severities 1..k take their parameter from
`eval.corruptions.<name>[k-1]`. Noise is drawn from a generator seeded per (seed, corruption, severity), so a cell
is reproducible and the global RNG is left untouched.
"""
from __future__ import annotations

import math

import torch
import torchvision.transforms.v2.functional as TF

from benchmark.training import predict
from benchmark.data import seeded_indices


def _gaussian_noise(x: torch.Tensor, sigma: float) -> torch.Tensor:
    return TF.gaussian_noise(x, sigma=sigma, clip=True)  # torch.randn_like: seeded by the caller's fork_rng


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    size = min(2 * math.ceil(3 * sigma) + 1, 2 * (min(x.shape[-2:]) // 2) - 1)  # odd, and no larger than the image
    return TF.gaussian_blur(x, kernel_size=[size, size], sigma=[sigma, sigma])


def _contrast(x: torch.Tensor, factor: float) -> torch.Tensor:
    return TF.adjust_contrast(x, factor)  # blends each image with its mean grey level; 1 = unchanged


CORRUPTIONS = {"gaussian_noise": _gaussian_noise, "gaussian_blur": _gaussian_blur, "contrast": _contrast}
_NAMES_SALT = {name: i for i, name in enumerate(CORRUPTIONS)}


def corrupt(x: torch.Tensor, name: str, severity: int, params, seed: int) -> torch.Tensor:
    """`x` under corruption `name` at `severity` (0 = unchanged; k >= 1 uses params[k - 1])."""
    if severity == 0:
        return x
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed * 1000 + _NAMES_SALT[name] * 10 + severity)
        return CORRUPTIONS[name](x, float(params[severity - 1])).clamp(0.0, 1.0)


def corruption_subset(x: torch.Tensor, y: torch.Tensor, size: int | None, seed: int):
    if not size or size >= len(y):
        return x, y
    idx = seeded_indices(len(y), size, seed)
    return x[idx], y[idx]


def corruption_metrics(model, x: torch.Tensor, y: torch.Tensor, device, cfg, seed: int):
    """(metrics, curves) for every corruption named in `cfg` (the `eval.corruptions` block) at every severity."""
    x, y = corruption_subset(x, y, cfg.get("subset"), seed)
    accuracy = lambda inputs: float((predict(model, inputs, device, batch_size=256).argmax(1) == y).float().mean())
    clean = accuracy(x)
    metrics, curves, all_acc = {"corruption/clean_acc": clean}, [], []
    for name in CORRUPTIONS:
        params = cfg.get(name)
        if not params:
            continue
        curves.append((f"corruption_curve/{name}", clean, 0))
        accs = []
        for severity in range(1, len(params) + 1):
            acc = accuracy(corrupt(x, name, severity, params, seed))
            metrics[f"corruption/{name}/sev_{severity}"] = acc
            curves.append((f"corruption_curve/{name}", acc, severity))
            accs.append(acc)
        metrics[f"corruption/{name}/mean"] = sum(accs) / len(accs)
        all_acc += accs
    if all_acc:
        metrics["corruption/mean"] = sum(all_acc) / len(all_acc)
        metrics["corruption/mean_relative"] = metrics["corruption/mean"] / clean if clean > 0 else 0.0
    return metrics, curves
