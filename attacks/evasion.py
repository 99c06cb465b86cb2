"""Adversarial evasion with ART: each attack in `threat.attacks` at each eps of its norm.

L-inf attacks run at every eps of `threat.eps` (the dataset's `eps`), L2 attacks at every eps of `threat.eps_l2`
(the dataset's `eps_l2`). Minimal-perturbation attacks (Carlini-Wagner L2, DeepFool) run once and robust accuracy
is read off at every eps: an image counts as broken at eps when the attack flipped its label with ||delta||_2 <= eps.
Each attack may set its own `subset` (a prefix of the cell's seeded subset): CW and DeepFool cost ~0.3-0.5 s per
image on CPU. Per cell: the worst case over the attacks run at each eps, and a gradient-masking flag.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from art.attacks.evasion import (
    AutoAttack,
    AutoProjectedGradientDescent,
    CarliniL2Method,
    DeepFool,
    FastGradientMethod,
    ProjectedGradientDescent,
    SquareAttack,
)

from attacks.art_classifier import art_classifier, frozen_parameters, to_numpy
from attacks.base import Threat, ThreatReport
from benchmark.data import Dataset

_NORM = {"linf": np.inf, "l2": 2}


@dataclass(frozen=True)
class AttackSpec:
    build: Callable  # (classifier, eps or None, params) -> ART evasion attack
    norm: str  # "linf" | "l2": which eps list it runs at
    role: str  # "iterative" (white-box, the reference), "single_step", "black_box", "ensemble", "minimal"
    query_budget: Callable | None = None  # params -> model queries per image allowed (black-box attacks)

    @property
    def minimal(self) -> bool:
        return self.role == "minimal"


def _fgsm(classifier, eps, p):
    return FastGradientMethod(classifier, norm=np.inf, eps=eps, batch_size=p.batch_size)


def _pgd(norm: str):
    def build(classifier, eps, p):
        return ProjectedGradientDescent(classifier, norm=_NORM[norm], eps=eps, eps_step=eps * p.step_fraction,
                                        max_iter=p.max_iter, num_random_init=p.random_restarts,
                                        batch_size=p.batch_size, verbose=False)
    return build


def _square(norm: str):
    def build(classifier, eps, p):
        return SquareAttack(classifier, norm=_NORM[norm], eps=eps, max_iter=p.max_iter, p_init=p.p_init,
                            nb_restarts=p.restarts, batch_size=p.batch_size, verbose=False)
    return build


def _cw_l2(classifier, _eps, p):
    return CarliniL2Method(classifier, confidence=0.0, learning_rate=p.learning_rate,
                           binary_search_steps=p.binary_search_steps, max_iter=p.max_iter,
                           initial_const=p.initial_const, batch_size=p.batch_size, verbose=False)


def _deepfool(classifier, _eps, p):
    return DeepFool(classifier, max_iter=p.max_iter, epsilon=p.overshoot, nb_grads=p.nb_grads,
                    batch_size=p.batch_size, verbose=False)


def _autoattack(norm: str):
    def build(classifier, eps, p):
        """ART's AutoAttack is NOT the reference AutoAttack (Croce & Hein 2020): ART's default list is APGD-CE,
        APGD-DLR, DeepFool and Square-5000, with its own step sizes and no targeted APGD-T/FAB-T; here the
        component list and budgets come from the config (CPU-sized), so numbers are not comparable to RobustBench."""
        parts = {
            "apgd_ce": lambda: AutoProjectedGradientDescent(
                classifier, norm=_NORM[norm], eps=eps, eps_step=eps * p.step_fraction, max_iter=p.max_iter,
                nb_random_init=p.random_restarts, batch_size=p.batch_size, loss_type="cross_entropy", verbose=False),
            "apgd_dlr": lambda: AutoProjectedGradientDescent(
                classifier, norm=_NORM[norm], eps=eps, eps_step=eps * p.step_fraction, max_iter=p.max_iter,
                nb_random_init=p.random_restarts, batch_size=p.batch_size, loss_type="difference_logits_ratio",
                verbose=False),
            "square": lambda: SquareAttack(classifier, norm=_NORM[norm], eps=eps, max_iter=p.square_queries,
                                           nb_restarts=1, batch_size=p.batch_size, verbose=False),
        }
        return AutoAttack(classifier, norm=_NORM[norm], eps=eps, eps_step=eps * p.step_fraction,
                          attacks=[parts[name]() for name in p.components], batch_size=p.batch_size)
    return build


ATTACKS: dict[str, AttackSpec] = {
    "fgsm": AttackSpec(_fgsm, "linf", "single_step"),
    "pgd_linf": AttackSpec(_pgd("linf"), "linf", "iterative"),
    "pgd_l2": AttackSpec(_pgd("l2"), "l2", "iterative"),
    "square_linf": AttackSpec(_square("linf"), "linf", "black_box", lambda p: p.max_iter * p.restarts),
    "square_l2": AttackSpec(_square("l2"), "l2", "black_box", lambda p: p.max_iter * p.restarts),
    "autoattack_linf": AttackSpec(_autoattack("linf"), "linf", "ensemble"),
    "autoattack_l2": AttackSpec(_autoattack("l2"), "l2", "ensemble"),
    "cw_l2": AttackSpec(_cw_l2, "l2", "minimal"),
    "deepfool": AttackSpec(_deepfool, "l2", "minimal"),
}
# A weaker attack (single step, or gradient-free) beating the iterative white-box attack at the same eps means the
# gradients mislead PGD: gradient masking (Athalye et al. 2018; Carlini et al. 2019, "On evaluating robustness").
MASKING_WEAKER_ROLES = ("single_step", "black_box")


def eval_subset(data: Dataset, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed, seeded subset of the test set on which every attack of a cell is run.

    A smaller size gives a prefix of the same permutation, so per-attack subsets are nested."""
    size = min(size, len(data.y_test))
    idx = torch.randperm(len(data.y_test), generator=torch.Generator().manual_seed(seed))[:size]
    return data.x_test[idx], data.y_test[idx]


def eps_key(eps: float) -> str:
    return f"eps_{eps:g}"  # MLflow metric names may not contain '='


def worst_key(norm: str, family: str = "worst") -> str:
    return family if norm == "linf" else f"{family}_{norm}"  # robust/worst/... stays the L-inf worst case


def worst_cases(correct: dict[tuple[str, float], np.ndarray], norm: str) -> tuple[dict[float, float], dict[float, float]]:
    """Two worst cases per eps over the attacks of one norm: the lowest single-attack accuracy (each on its own
    subset), and the per-image "ensemble" accuracy (an image counts only if it survives every attack; on the
    images all of them attacked, the shortest per-attack prefix), which AutoAttack-style evaluations report."""
    by_eps: dict[float, list[np.ndarray]] = {}
    for (name, eps), ok in correct.items():
        if ATTACKS[name].norm == norm:
            by_eps.setdefault(eps, []).append(ok)
    worst = {eps: min(float(ok.mean()) for ok in oks) for eps, oks in by_eps.items()}
    ensemble = {}
    for eps, oks in by_eps.items():
        n = min(len(ok) for ok in oks)
        ensemble[eps] = float(np.logical_and.reduce([ok[:n] for ok in oks]).mean())
    return worst, ensemble


def eps_list(threat_cfg, norm: str) -> list[float]:
    return [float(e) for e in (threat_cfg.eps if norm == "linf" else threat_cfg.get("eps_l2") or [])]


def minimal_robust_correct(correct_adv: np.ndarray, norms: np.ndarray, eps: float) -> np.ndarray:
    """Per image: still correct at budget eps given a minimal-perturbation attack's output.

    `correct_adv` is whether the model is right on the attack's output; an image is broken at eps only when the
    attack flipped it with a perturbation no larger than eps (a failed attack returns the clean image)."""
    return correct_adv | (norms > eps * (1 + 1e-6))


@contextlib.contextmanager
def counting_predictions(classifier):
    """Counts images the attack sends through `classifier.predict` (ART does not report queries): the real query
    cost of a black-box attack, next to its configured budget."""
    counter = {"images": 0}
    original = classifier.predict

    def predict(x, *args, **kwargs):
        counter["images"] += len(x)
        return original(x, *args, **kwargs)

    classifier.predict = predict
    try:
        yield counter
    finally:
        del classifier.predict  # back to the class method


def gradient_masking(acc: dict[tuple[str, float], np.ndarray], tolerance: float) -> tuple[float, float]:
    """(flag, margin): margin = max over eps and weaker/stronger pairs of the same norm of
    acc(stronger iterative attack) - acc(weaker attack), on the images both attacked (nested subsets)."""
    margin = -1.0
    for (strong, eps), strong_ok in acc.items():
        if ATTACKS[strong].role != "iterative" or eps == 0:
            continue
        for (weak, weak_eps), weak_ok in acc.items():
            if weak_eps != eps or ATTACKS[weak].role not in MASKING_WEAKER_ROLES \
                    or ATTACKS[weak].norm != ATTACKS[strong].norm:
                continue
            n = min(len(strong_ok), len(weak_ok))
            margin = max(margin, float(strong_ok[:n].mean() - weak_ok[:n].mean()))
    return float(margin > tolerance), margin


class EvasionThreat(Threat):
    @classmethod
    def check_config(cls, cfg) -> None:
        """Checks beyond benchmark/validate.py's shared ones (names, eps, batch sizes): L2 budgets, per-attack
        subsets and the attack-specific knobs."""
        from benchmark.validate import ConfigError, _choice, _range

        eps_l2 = cfg.get("eps_l2") or []
        for i, eps in enumerate(eps_l2):
            _range(f"threat.eps_l2[{i}]", eps, 0.0, 1000.0)
        _range("threat.masking_tolerance", cfg.get("masking_tolerance", 0.0), 0.0, 1.0)
        for i, attack in enumerate(cfg.attacks):
            prefix, spec = f"threat.attacks[{i}]", ATTACKS[attack.name]
            if spec.norm == "l2" and not eps_l2:
                raise ConfigError(f"{prefix}.name={attack.name!r} is an L2 attack but threat.eps_l2 is empty; "
                                  "set threat.eps_l2 (e.g. eps_l2: ${dataset.eps_l2})")
            if attack.get("subset") is not None:
                _range(f"{prefix}.subset", attack.subset, 1, 10_000_000)
            for key, low, high in (("restarts", 1, 10_000), ("p_init", 1e-6, 1.0), ("binary_search_steps", 1, 1000),
                                   ("square_queries", 1, 1_000_000), ("nb_grads", 2, 100_000),
                                   ("overshoot", 0.0, 10.0), ("learning_rate", 1e-9, 100.0)):
                if key in attack:
                    _range(f"{prefix}.{key}", attack[key], low, high)
            for j, part in enumerate(attack.get("components") or []):
                _choice(f"{prefix}.components[{j}]", part, {"apgd_ce", "apgd_dlr", "square"})
            if "components" in attack and not attack.components:
                raise ConfigError(f"{prefix}.components is empty; allowed: a list of apgd_ce, apgd_dlr, square")

    def evaluate(self, model, data: Dataset, device: torch.device, seed: int) -> ThreatReport:
        x, y = eval_subset(data, self.cfg.subset, seed)
        x_np, y_np = to_numpy(x), y.numpy()
        report = ThreatReport(metrics={"robust/subset_size": float(len(y_np))})
        correct: dict[tuple[str, float], np.ndarray] = {}  # (attack, eps) -> per-image correctness after attack
        with frozen_parameters(model):
            classifier = art_classifier(model, tuple(x.shape[1:]), data.num_classes, device)
            clean_ok = classifier.predict(x_np).argmax(1) == y_np
            report.metrics["robust/subset_clean_acc"] = float(clean_ok.mean())
            for attack_cfg in self.cfg.attacks:
                spec, name = ATTACKS[attack_cfg.name], attack_cfg.name
                n = min(int(attack_cfg.get("subset") or len(y_np)), len(y_np))
                started = time.perf_counter()
                with counting_predictions(classifier) as queries:
                    results = self._run(spec, attack_cfg, classifier, x_np[:n], y_np[:n], clean_ok[:n], seed)
                report.metrics[f"time/attack_{name}_s"] = time.perf_counter() - started
                if attack_cfg.get("subset"):
                    report.metrics[f"attack/{name}/subset_size"] = float(n)
                if spec.query_budget is not None:
                    attacked = sum(1 for eps in results if eps > 0) * n
                    own = len(results) * n  # the accuracy check after each eps is ours, not the attack's
                    report.metrics[f"attack/{name}/query_budget"] = float(spec.query_budget(attack_cfg))
                    report.metrics[f"attack/{name}/queries_per_image"] = (queries["images"] - own) / max(attacked, 1)
                for eps, ok in results.items():
                    correct[(name, eps)] = ok
                    report.metrics[f"robust/{name}/{eps_key(eps)}"] = float(ok.mean())
                    report.curves.append((f"robust_curve/{name}", float(ok.mean()), int(round(eps * 1000))))
        for norm in _NORM:
            worst, ensemble = worst_cases(correct, norm)
            for eps, acc in worst.items():
                report.metrics[f"robust/{worst_key(norm)}/{eps_key(eps)}"] = acc
                report.metrics[f"robust/{worst_key(norm, 'ensemble')}/{eps_key(eps)}"] = ensemble[eps]
        flag, margin = gradient_masking(correct, float(self.cfg.get("masking_tolerance", 0.0)))
        if margin > -1.0:  # a weaker and a stronger attack ran at a common eps
            report.metrics["robust/gradient_masking_flag"] = flag
            report.metrics["robust/gradient_masking_margin"] = margin
        return report

    def _run(self, spec: AttackSpec, params, classifier, x, y, clean_ok, seed) -> dict[float, np.ndarray]:
        """eps -> per-image correctness on the attack's output (eps = 0: the clean point of the curve)."""
        np.random.seed(seed)  # ART draws random starts / Square's squares from numpy's global generator
        eps_values = eps_list(self.cfg, spec.norm)
        if spec.minimal:
            x_adv = spec.build(classifier, None, params).generate(x=x, y=y) if any(e > 0 for e in eps_values) else x
            ok_adv = classifier.predict(x_adv, batch_size=params.batch_size).argmax(1) == y
            norms = np.linalg.norm((x_adv - x).reshape(len(x), -1), axis=1)
            return {eps: clean_ok & minimal_robust_correct(ok_adv, norms, eps) for eps in eps_values}
        out = {}
        for eps in eps_values:
            np.random.seed(seed)
            # eps = 0 is the clean point of a robustness curve (ART rejects a zero step)
            x_adv = x if eps == 0 else spec.build(classifier, eps, params).generate(x=x, y=y)
            out[eps] = classifier.predict(x_adv, batch_size=params.batch_size).argmax(1) == y
        return out
