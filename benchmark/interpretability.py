"""Interpretability: do the pruned model's explanations still agree with its dense parent's, and are they faithful?

Attributions come from Captum (Saliency = |d logit_y / d x|, IntegratedGradients from a black baseline), for the
true label, on a fixed seeded test subset, summed in absolute value over channels into one map per image.
Hand-written here (Captum has none of them): the agreement scores between two maps (Spearman rank correlation and
top-k overlap) and the "deletion" faithfulness curve (Petsiuk et al. 2018, RISE): accuracy as the most-attributed
pixels are set to the baseline, summarised by its normalised area (lower = the map found what the model uses).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
from captum.attr import IntegratedGradients, Saliency
from scipy.stats import rankdata

from benchmark.data import seeded_indices
from benchmark.dense_memo import memoised
from benchmark.training import frozen_parameters, predict

METHODS = ("saliency", "integrated_gradients")


def attribution_maps(model: nn.Module, x: torch.Tensor, target: torch.Tensor, method: str, cfg, device) -> torch.Tensor:
    """N x (H*W) non-negative attribution maps of `model` for class `target`."""
    with frozen_parameters(model):  # input gradients only
        inputs = x.detach().to(device).clone().requires_grad_(True)  # never flag the caller's tensor
        if method == "saliency":
            attr = Saliency(model).attribute(inputs, target=target.to(device), abs=True)
        elif method == "integrated_gradients":
            attr = IntegratedGradients(model).attribute(inputs, baselines=inputs.detach() * 0 + cfg.baseline,
                                                        target=target.to(device), n_steps=cfg.ig_steps,
                                                        internal_batch_size=len(x) * cfg.ig_steps)
        else:
            raise ValueError(f"eval.interpret.methods: {method!r} is unknown; allowed: {list(METHODS)}")
    return attr.detach().abs().sum(1).flatten(1).cpu()


def spearman(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """Per-row Spearman rank correlation (ties get average ranks); NaN for a constant row."""
    ra, rb = rankdata(a.numpy(), axis=1), rankdata(b.numpy(), axis=1)
    ra, rb = ra - ra.mean(1, keepdims=True), rb - rb.mean(1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (ra * rb).sum(1) / np.sqrt((ra**2).sum(1) * (rb**2).sum(1))


def topk_overlap(a: torch.Tensor, b: torch.Tensor, fraction: float) -> np.ndarray:
    """Per row: share of the top-k pixels of `a` that are also in the top-k of `b` (k = fraction of the pixels)."""
    k = max(1, int(round(fraction * a.shape[1])))
    top_a, top_b = a.topk(k, dim=1).indices, b.topk(k, dim=1).indices
    return np.array([len(set(ia.tolist()) & set(ib.tolist())) / k for ia, ib in zip(top_a, top_b)])


def deletion_curve(model: nn.Module, x: torch.Tensor, y: torch.Tensor, maps: torch.Tensor, steps: int,
                   baseline: float, device) -> list[float]:
    """Accuracy after setting the top i/steps of each image's pixels (by its map) to `baseline`, i = 0..steps."""
    order = maps.argsort(dim=1, descending=True)
    pixels = maps.shape[1]
    accs = []
    for i in range(steps + 1):
        removed = torch.zeros_like(maps, dtype=torch.bool)
        removed.scatter_(1, order[:, : int(round(i / steps * pixels))], True)
        xd = torch.where(removed.view(len(x), 1, *x.shape[2:]), torch.full_like(x, baseline), x)
        accs.append(float((predict(model, xd, device, batch_size=256).argmax(1) == y).float().mean()))
    return accs


def area(curve: list[float]) -> float:
    return float(np.trapezoid(curve, dx=1.0 / (len(curve) - 1)))


def interpret_subset(x: torch.Tensor, y: torch.Tensor, size: int, seed: int):
    idx = seeded_indices(len(y), size, seed + 1)
    return x[idx], y[idx]


def dense_attributions(dense: nn.Module, x: torch.Tensor, y: torch.Tensor, method: str, cfg, device):
    """(maps, deletion-curve area) of the dense parent: the same for every cell a worker runs on that dense model,
    so computed once per process (benchmark/dense_memo.py)."""
    def compute():
        maps = attribution_maps(dense, x, y, method, cfg, device)
        return maps, area(deletion_curve(dense, x, y, maps, cfg.deletion_steps, cfg.baseline, device))

    settings = {"method": method, "ig_steps": cfg.ig_steps, "baseline": cfg.baseline,
                "deletion_steps": cfg.deletion_steps, "device": str(device)}
    return memoised("attributions", dense, {"x": x, "y": y}, settings, compute)


def compare(dense: nn.Module, pruned: nn.Module, x: torch.Tensor, y: torch.Tensor, device, cfg, seed: int):
    """(metrics, curves, maps) comparing the pruned model's attributions with its dense parent's on a fixed subset.

    maps: method -> (dense maps, pruned maps), for the artifact figure."""
    x, y = interpret_subset(x, y, cfg.subset, seed)
    metrics: dict[str, float] = {"interpret/subset_size": float(len(y))}
    curves, maps = [], {}
    for method in cfg.methods:
        a_dense, auc_dense = dense_attributions(dense, x, y, method, cfg, device)
        a_pruned = attribution_maps(pruned, x, y, method, cfg, device)
        maps[method] = (a_dense, a_pruned)
        correlations = spearman(a_dense, a_pruned)  # NaN for a constant map (e.g. every weight pruned)
        metrics[f"interpret/{method}/spearman"] = float(np.nanmean(correlations)) if np.isfinite(correlations).any() \
            else float("nan")
        metrics[f"interpret/{method}/topk_overlap"] = float(topk_overlap(a_dense, a_pruned, cfg.topk).mean())
        curve = deletion_curve(pruned, x, y, a_pruned, cfg.deletion_steps, cfg.baseline, device)
        metrics[f"interpret/{method}/deletion_auc"] = area(curve)
        metrics[f"interpret/{method}/deletion_auc_dense"] = auc_dense
        curves += [(f"interpret_deletion/{method}", acc, int(round(100 * i / cfg.deletion_steps)))
                   for i, acc in enumerate(curve)]
    return metrics, curves, (x, y, maps)


def attribution_figure(x: torch.Tensor, maps: dict, images: int):
    """Rows = inputs; columns = the input, then dense and pruned maps per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = min(images, len(x))
    cols = 1 + 2 * len(maps)
    fig, axes = plt.subplots(n, cols, figsize=(1.6 * cols, 1.6 * n), squeeze=False)
    side = x.shape[-1]
    for row in range(n):
        image = x[row].detach().cpu().permute(1, 2, 0).numpy()
        axes[row, 0].imshow(image.squeeze(-1) if image.shape[-1] == 1 else image, cmap="gray")
        for j, (method, (a_dense, a_pruned)) in enumerate(maps.items()):
            for k, (label, a) in enumerate((("dense", a_dense), ("pruned", a_pruned))):
                axes[row, 1 + 2 * j + k].imshow(a[row].view(-1, side).numpy(), cmap="hot")
                if row == 0:
                    axes[row, 1 + 2 * j + k].set_title(f"{method}\n{label}", fontsize=7)
    axes[0, 0].set_title("input", fontsize=7)
    for ax in axes.flat:
        ax.axis("off")
    fig.tight_layout()
    plt.close(fig)  # out of pyplot's registry (a long-lived joblib worker warned at 20 open figures); still loggable
    return fig
