"""Adversarial evasion with ART: each attack in `threat.attacks` at each eps of its norm.

Robust accuracy means one thing for every attack: image i is robust at eps when the model is right on the clean
image AND on the attack's output (an attack that "fixes" a misclassified image does not make it robust).

L-inf attacks run at every eps of `threat.eps` (the dataset's `eps`), L2 attacks at every eps of `threat.eps_l2`
(the dataset's `eps_l2`). Minimal-perturbation attacks (Carlini-Wagner L2, DeepFool, FMN in L-inf or L2) run once
and robust accuracy is read off at every eps: an image counts as broken at eps when the attack flipped its label
with ||delta|| <= eps in the attack's norm; the per-image radii are drawn as a security curve (a figure artifact).
Each attack may set its own `subset` (a prefix of the cell's seeded subset), so that the costliest per image (CW,
DeepFool, the black-box ones) run on fewer images. Per cell: the per-image worst case over the attacks of each norm
at each eps (on the images every attack saw), a gradient-masking flag, and optionally PGD's convergence gap
(`threat.convergence`).
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
from omegaconf import OmegaConf

from attacks import THREATS
from attacks.art_classifier import art_classifier, frozen_parameters, to_numpy
from attacks.autoattack_reference import reference_autoattack
from attacks.base import Threat, ThreatReport
from attacks.fmn import fast_minimum_norm, security_curve_figure
from benchmark.checks import ConfigError
from benchmark.data import Dataset, seeded_indices

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


class ArtStandardAutoAttack:
    """The reference AutoAttack's composition (Croce & Hein 2020, "standard" version) rebuilt from ART's parts
    (`autoattack_art_standard`; the reference itself is `autoattack_standard`, attacks/autoattack_reference.py):
    APGD-CE, targeted APGD-DLR against each of the `targets` most likely non-true classes (by the clean logits),
    and Square with `square_queries` queries, each run on the images the previous ones left robust (the per-image
    worst case). FAB-T, the fourth attack of the reference, is absent from ART and so from this ensemble, and ART's
    APGD returns its final iterate where the reference keeps any iterate that fools the model. ART's own
    AutoAttack runs every listed attack untargeted and then targeted over all classes in index order, which is
    not this composition, hence the loop here."""

    def __init__(self, classifier, eps: float, p):
        self.classifier, self.eps, self.p = classifier, eps, p

    def _apgd(self, loss_type: str, targeted: bool):
        p = self.p
        return AutoProjectedGradientDescent(
            self.classifier, norm=np.inf, eps=self.eps, eps_step=self.eps * p.step_fraction, max_iter=p.max_iter,
            targeted=targeted, nb_random_init=p.random_restarts, batch_size=p.batch_size, loss_type=loss_type,
            verbose=False)

    def generate(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        x_adv = x.copy()
        logits = self.classifier.predict(x, batch_size=self.p.batch_size)
        robust = logits.argmax(1) == y
        ranked = np.argsort(-logits, axis=1)
        others = np.stack([row[row != label] for row, label in zip(ranked, y)])  # non-true classes, likeliest first
        steps = [(self._apgd("cross_entropy", False), None)]
        steps += [(self._apgd("difference_logits_ratio", True), others[:, k]) for k in range(min(self.p.targets, others.shape[1]))]
        steps.append((SquareAttack(self.classifier, norm=np.inf, eps=self.eps, max_iter=self.p.square_queries,
                                   p_init=0.8, nb_restarts=1, batch_size=self.p.batch_size, verbose=False), None))
        for attack, target in steps:
            idx = np.flatnonzero(robust)
            if len(idx) == 0:
                break
            attacked = attack.generate(x=x[idx], y=y[idx] if target is None else target[idx])
            fooled = self.classifier.predict(attacked, batch_size=self.p.batch_size).argmax(1) != y[idx]
            x_adv[idx[fooled]] = attacked[fooled]
            robust[idx[fooled]] = False
        return x_adv


ATTACKS: dict[str, AttackSpec] = {
    "fgsm": AttackSpec(_fgsm, "linf", "single_step"),
    "pgd_linf": AttackSpec(_pgd("linf"), "linf", "iterative"),
    "pgd_l2": AttackSpec(_pgd("l2"), "l2", "iterative"),
    "square_linf": AttackSpec(_square("linf"), "linf", "black_box", lambda p: p.max_iter * p.restarts),
    "square_l2": AttackSpec(_square("l2"), "l2", "black_box", lambda p: p.max_iter * p.restarts),
    "autoattack_linf": AttackSpec(_autoattack("linf"), "linf", "ensemble"),
    "autoattack_l2": AttackSpec(_autoattack("l2"), "l2", "ensemble"),
    "autoattack_standard": AttackSpec(reference_autoattack("linf"), "linf", "ensemble"),
    "autoattack_standard_l2": AttackSpec(reference_autoattack("l2"), "l2", "ensemble"),
    "autoattack_art_standard": AttackSpec(ArtStandardAutoAttack, "linf", "ensemble"),
    "cw_l2": AttackSpec(_cw_l2, "l2", "minimal"),
    "deepfool": AttackSpec(_deepfool, "l2", "minimal"),
    "fmn_linf": AttackSpec(fast_minimum_norm("linf"), "linf", "minimal"),
    "fmn_l2": AttackSpec(fast_minimum_norm("l2"), "l2", "minimal"),
}
# A weaker attack (single step, or gradient-free) beating the iterative white-box attack at the same eps means the
# gradients mislead PGD: gradient masking (Athalye et al. 2018; Carlini et al. 2019, "On evaluating robustness").
MASKING_WEAKER_ROLES = ("single_step", "black_box")


def eval_subset(data: Dataset, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed, seeded subset of the test set on which every attack of a cell is run.

    A smaller size gives a prefix of the same permutation, so per-attack subsets are nested."""
    idx = seeded_indices(len(data.y_test), size, seed)
    return data.x_test[idx], data.y_test[idx]


def eps_key(eps: float) -> str:
    return f"eps_{eps:g}"  # MLflow metric names may not contain '='


def worst_key(norm: str, family: str = "worst") -> str:
    return family if norm == "linf" else f"{family}_{norm}"  # robust/worst/... stays the L-inf worst case


def worst_case(robust: dict[tuple[str, float], np.ndarray], norm: str) -> dict[float, tuple[float, int]]:
    """eps -> (accuracy, images): the per-image worst case over the attacks of one norm, as AutoAttack reports it.

    An image counts only if it is robust under every attack of the norm at that eps; it is measured on the images
    every one of those attacks saw (the shortest per-attack prefix of the cell's subset)."""
    by_eps: dict[float, list[np.ndarray]] = {}
    for (name, eps), ok in robust.items():
        if ATTACKS[name].norm == norm:
            by_eps.setdefault(eps, []).append(ok)
    worst = {}
    for eps, oks in by_eps.items():
        n = min(len(ok) for ok in oks)
        worst[eps] = (float(np.logical_and.reduce([ok[:n] for ok in oks]).mean()), n)
    return worst


def pgd_budget(params) -> int:
    """Gradient steps per image of an iterative attack: steps x random starts (ART runs one start when it is 0)."""
    return int(params.max_iter) * max(1, int(params.get("random_restarts", 1)))


def scaled_budget(params, multiplier: int, scale: str):
    """The same attack with `multiplier` times its budget: `multiplier` x the random starts (fresh starts find
    maxima one start misses), or x the steps (step size unchanged)."""
    scaled = OmegaConf.to_container(params, resolve=True)
    if scale == "restarts":
        scaled["random_restarts"] = max(1, int(params.get("random_restarts", 1))) * multiplier
    else:
        scaled["max_iter"] = int(params.max_iter) * multiplier
    return OmegaConf.create(scaled)


def convergence_enabled(cfg, seed: int) -> list[int]:
    """The budget multipliers of `threat.convergence` that apply to this cell (none when off or for another seed)."""
    block = cfg.get("convergence")
    if not block or not block.get("multipliers"):
        return []
    seeds = block.get("seeds")
    return [] if seeds is not None and seed not in seeds else sorted(int(m) for m in block.multipliers)


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


@THREATS.register("evasion")
class EvasionThreat(Threat):
    def __init__(self, cfg):
        super().__init__(cfg)
        # minimal attack -> per image the smallest budget that breaks it (0: wrong on the clean image; inf: the
        # attack found nothing), filled by `_run` and drawn by `evaluate`
        self.robust_radii: dict[str, np.ndarray] = {}

    @classmethod
    def check_config(cls, cfg) -> None:
        """L2 attacks need L2 budgets; a convergence check needs an iterative attack."""
        for i, attack in enumerate(cfg.attacks):
            if ATTACKS[attack.name].norm == "l2" and not cfg.get("eps_l2"):
                raise ConfigError(f"threat.attacks[{i}].name={attack.name!r} is an L2 attack but threat.eps_l2 is "
                                  "empty; set threat.eps_l2 (e.g. eps_l2: ${dataset.eps_l2})")
        block = cfg.get("convergence")
        if block and block.get("multipliers") and not any(ATTACKS[a.name].role == "iterative" for a in cfg.attacks):
            raise ConfigError("threat.convergence.multipliers is set but threat.attacks has no iterative attack; "
                              "allowed: pgd_linf or pgd_l2 in threat.attacks, or convergence: null")

    def evaluate(self, model, data: Dataset, device: torch.device, seed: int) -> ThreatReport:
        x, y = eval_subset(data, self.cfg.subset, seed)
        x_np, y_np = to_numpy(x), y.numpy()
        report = ThreatReport(metrics={"robust/subset_size": float(len(y_np))})
        robust: dict[tuple[str, float], np.ndarray] = {}  # (attack, eps) -> per image: right on clean and attacked
        multipliers = convergence_enabled(self.cfg, seed)
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
                if spec.role == "iterative":
                    report.metrics[f"attack/{name}/budget"] = float(pgd_budget(attack_cfg))
                if spec.query_budget is not None:
                    attacked = sum(1 for eps in results if eps > 0) * n
                    own = len(results) * n  # the accuracy check after each eps is ours, not the attack's
                    report.metrics[f"attack/{name}/query_budget"] = float(spec.query_budget(attack_cfg))
                    report.metrics[f"attack/{name}/queries_per_image"] = (queries["images"] - own) / max(attacked, 1)
                if spec.minimal:
                    report.figures[f"security_curve_{name}.png"] = security_curve_figure(
                        name, self.robust_radii.pop(name), eps_list(self.cfg, spec.norm))
                for eps, ok in results.items():
                    robust[(name, eps)] = ok
                    report.metrics[f"robust/{name}/{eps_key(eps)}"] = float(ok.mean())
                    report.curves.append((f"robust_curve/{name}", float(ok.mean()), int(round(eps * 1000))))
                if multipliers and spec.role == "iterative":
                    started = time.perf_counter()
                    report.metrics.update(self._convergence(spec, attack_cfg, multipliers, classifier, x_np[:n],
                                                            y_np[:n], clean_ok[:n], seed, results))
                    report.metrics[f"time/convergence_{name}_s"] = time.perf_counter() - started
        for norm in _NORM:
            for eps, (acc, n) in worst_case(robust, norm).items():
                report.metrics[f"robust/{worst_key(norm)}/{eps_key(eps)}"] = acc
                report.metrics[f"robust/{worst_key(norm)}/subset_size"] = float(n)
        flag, margin = gradient_masking(robust, float(self.cfg.get("masking_tolerance", 0.0)))
        if margin > -1.0:  # a weaker and a stronger attack ran at a common eps
            report.metrics["robust/gradient_masking_flag"] = flag
            report.metrics["robust/gradient_masking_margin"] = margin
        return report

    def _convergence(self, spec: AttackSpec, params, multipliers: list[int], classifier, x, y, clean_ok, seed,
                     base: dict[float, np.ndarray]) -> dict[str, float]:
        """PGD re-run at `multiplier` x its budget (`threat.convergence.scale`: more random starts or more steps):
        robust accuracy and the gap acc(B) - acc(multiplier x B) per eps (> 0: the cell's budget had not
        converged). `robust/convergence_gap[_l2]` is the gap at the largest multiplier."""
        metrics = {}
        scale = self.cfg.convergence.get("scale", "restarts")
        for multiplier in multipliers:
            stronger = self._run(spec, scaled_budget(params, multiplier, scale), classifier, x, y, clean_ok, seed)
            for eps, ok in stronger.items():
                gap = float(base[eps].mean() - ok.mean())
                metrics[f"robust/{params.name}_x{multiplier}/{eps_key(eps)}"] = float(ok.mean())
                metrics[f"robust/{worst_key(spec.norm, f'convergence_gap_x{multiplier}')}/{eps_key(eps)}"] = gap
                if multiplier == multipliers[-1]:
                    metrics[f"robust/{worst_key(spec.norm, 'convergence_gap')}/{eps_key(eps)}"] = gap
        return metrics

    def _run(self, spec: AttackSpec, params, classifier, x, y, clean_ok, seed) -> dict[float, np.ndarray]:
        """eps -> per image: robust (right on the clean image and on the attack's output; eps = 0: clean)."""
        np.random.seed(seed)  # ART draws random starts / Square's squares from numpy's global generator
        eps_values = eps_list(self.cfg, spec.norm)
        if spec.minimal:
            x_adv = spec.build(classifier, None, params).generate(x=x, y=y) if any(e > 0 for e in eps_values) else x
            ok_adv = classifier.predict(x_adv, batch_size=params.batch_size).argmax(1) == y
            norms = np.linalg.norm((x_adv - x).reshape(len(x), -1), ord=_NORM[spec.norm], axis=1)
            self.robust_radii[params.name] = np.where(clean_ok, np.where(ok_adv, np.inf, norms), 0.0)
            return {eps: clean_ok & minimal_robust_correct(ok_adv, norms, eps) for eps in eps_values}
        out = {}
        for eps in eps_values:
            np.random.seed(seed)
            # eps = 0 is the clean point of a robustness curve (ART rejects a zero step)
            x_adv = x if eps == 0 else spec.build(classifier, eps, params).generate(x=x, y=y)
            out[eps] = clean_ok & (classifier.predict(x_adv, batch_size=params.batch_size).argmax(1) == y)
        return out
