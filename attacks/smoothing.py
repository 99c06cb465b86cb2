"""Certified robustness by randomized smoothing (Cohen et al. 2019) with ART's PyTorchRandomizedSmoothing.

The smoothed classifier g(x) = argmax_c P(f(x + N(0, sigma^2 I)) = c) of the finished (pruned) model f is
certified per image with ART's `certify` (Monte Carlo counts + Clopper-Pearson bound; needs statsmodels): a class
and an L2 radius within which g provably does not change. Certified accuracy at radius r = fraction of the subset
whose certified class is the true label with radius >= r (abstentions count as wrong). The model is not trained
with noise here, so this measures what pruning does to the certifiable robustness of the same training recipe.
"""
from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn as nn
from art.estimators.certification.randomized_smoothing import PyTorchRandomizedSmoothing

from attacks import THREATS
from attacks.art_classifier import frozen_parameters, to_numpy
from attacks.base import Threat, ThreatReport
from benchmark.data import Dataset, eval_subset


def radius_key(radius: float) -> str:
    return f"r_{radius:g}"


def certified_accuracy(pred: np.ndarray, radius: np.ndarray, y: np.ndarray, r: float) -> float:
    return float(((pred == y) & (radius >= r)).mean())


@THREATS.register("smoothing")
class SmoothingThreat(Threat):
    def smoothed(self, model: nn.Module, data: Dataset, device: torch.device) -> PyTorchRandomizedSmoothing:
        return PyTorchRandomizedSmoothing(
            model=model, loss=nn.CrossEntropyLoss(), input_shape=tuple(data.x_test.shape[1:]),
            nb_classes=data.num_classes, clip_values=(0.0, 1.0), device_type="gpu" if device.type == "cuda" else "cpu",
            sample_size=self.cfg.n_select, scale=self.cfg.sigma, alpha=self.cfg.alpha)

    def certify(self, model: nn.Module, x: np.ndarray, data: Dataset, device, seed: int):
        np.random.seed(seed)  # ART draws the Gaussian noise from numpy's global generator
        with frozen_parameters(model):
            return self.smoothed(model, data, device).certify(x, n=self.cfg.n_certify, batch_size=self.cfg.batch_size)

    def evaluate(self, model, data: Dataset, device: torch.device, seed: int) -> ThreatReport:
        x, y = eval_subset(data, self.cfg.subset, seed)
        y_np = y.numpy()
        started = time.perf_counter()
        pred, radius = self.certify(model, to_numpy(x), data, device, seed)
        sigma_key = f"sigma_{float(self.cfg.sigma):g}"
        report = ThreatReport(metrics={
            "certified/subset_size": float(len(y_np)),
            "certified/abstain_rate": float((pred == -1).mean()),
            # average certified radius (ACR): radius of correct certified predictions, 0 for wrong or abstained
            "certified/mean_radius": float(np.where(pred == y_np, radius, 0.0).mean()),
            "time/certify_s": time.perf_counter() - started,
        })
        for r in self.cfg.radii:
            acc = certified_accuracy(pred, radius, y_np, float(r))
            report.metrics[f"certified/acc/{radius_key(float(r))}"] = acc
            report.curves.append((f"certified_curve/{sigma_key}", acc, int(round(float(r) * 1000))))
        return report
