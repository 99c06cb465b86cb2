"""Calibration of the pruned model on the test split: expected calibration error (ECE) and negative log-likelihood.

Hand-written: no installed library computes ECE (torchmetrics is not a dependency; scikit-learn's
calibration_curve bins but does not weight by bin size). ECE as in Guo et al. 2017: equal-width confidence bins,
sum over bins of |accuracy - mean confidence| weighted by the share of samples in the bin.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def expected_calibration_error(probs: torch.Tensor, y: torch.Tensor, bins: int = 15) -> float:
    confidence, predicted = probs.max(1)
    correct = (predicted == y).float()
    # bin i holds confidences in (i/bins, (i+1)/bins]; confidence 0 cannot occur for a max over classes
    index = (confidence * bins).ceil().long().clamp(1, bins) - 1
    count = torch.bincount(index, minlength=bins).float()
    gap = torch.bincount(index, weights=correct - confidence, minlength=bins).abs()
    return float(gap.sum() / count.sum())


def calibration_metrics(logits: torch.Tensor, y: torch.Tensor, bins: int = 15) -> dict[str, float]:
    probs = logits.softmax(1)
    return {
        "calib/ece": expected_calibration_error(probs, y, bins),
        "calib/nll": float(F.cross_entropy(logits, y)),
        "calib/mean_confidence": float(probs.max(1).values.mean()),
    }
