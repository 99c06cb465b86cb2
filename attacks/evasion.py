"""Adversarial evasion with ART: each attack in `threat.attacks` at each eps in `threat.eps`."""
from __future__ import annotations

import time

import numpy as np
import torch
from art.attacks.evasion import FastGradientMethod, ProjectedGradientDescent

from attacks.art_classifier import art_classifier, frozen_parameters, to_numpy
from attacks.base import Threat, ThreatReport
from benchmark.data import Dataset


def _fgsm(classifier, eps: float, params) -> object:
    return FastGradientMethod(classifier, norm=np.inf, eps=eps, batch_size=params.batch_size)


def _pgd_linf(classifier, eps: float, params) -> object:
    return ProjectedGradientDescent(
        classifier,
        norm=np.inf,
        eps=eps,
        eps_step=eps * params.step_fraction,
        max_iter=params.max_iter,
        num_random_init=params.random_restarts,
        batch_size=params.batch_size,
        verbose=False,
    )


ATTACKS = {"fgsm": _fgsm, "pgd_linf": _pgd_linf}


def eval_subset(data: Dataset, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed, seeded subset of the test set on which every attack of a cell is run."""
    size = min(size, len(data.y_test))
    idx = torch.randperm(len(data.y_test), generator=torch.Generator().manual_seed(seed))[:size]
    return data.x_test[idx], data.y_test[idx]


def eps_key(eps: float) -> str:
    return f"eps_{eps:g}"  # MLflow metric names may not contain '='


class EvasionThreat(Threat):
    def evaluate(self, model, data: Dataset, device: torch.device, seed: int) -> ThreatReport:
        x, y = eval_subset(data, self.cfg.subset, seed)
        x_np, y_np = to_numpy(x), y.numpy()
        report = ThreatReport(metrics={"robust/subset_size": float(len(y_np))})
        worst: dict[float, float] = {}  # eps -> lowest robust accuracy over the attacks run at that eps
        with frozen_parameters(model):
            classifier = art_classifier(model, tuple(x.shape[1:]), data.num_classes, device)
            report.metrics["robust/subset_clean_acc"] = float((classifier.predict(x_np).argmax(1) == y_np).mean())
            for attack_cfg in self.cfg.attacks:
                started = time.perf_counter()
                for eps in self.cfg.eps:
                    np.random.seed(seed)  # ART draws PGD's random start from numpy's global generator
                    # eps = 0 is the clean point of a robustness curve (ART rejects a zero PGD step)
                    x_adv = x_np if eps == 0 else ATTACKS[attack_cfg.name](classifier, float(eps), attack_cfg).generate(x=x_np, y=y_np)
                    acc = float((classifier.predict(x_adv, batch_size=attack_cfg.batch_size).argmax(1) == y_np).mean())
                    report.metrics[f"robust/{attack_cfg.name}/{eps_key(eps)}"] = acc
                    report.curves.append((f"robust_curve/{attack_cfg.name}", acc, int(round(eps * 1000))))
                    worst[float(eps)] = min(worst.get(float(eps), 1.0), acc)
                report.metrics[f"time/attack_{attack_cfg.name}_s"] = time.perf_counter() - started
        for eps, acc in worst.items():
            report.metrics[f"robust/worst/{eps_key(eps)}"] = acc
        return report
