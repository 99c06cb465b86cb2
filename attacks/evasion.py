"""Adversarial evasion with ART: each attack in `threat.attacks` at each eps of its norm.

The attacks are plugins, one module each in attacks/evasion_attacks/ (its builder, its config model, its norm and
role); this module is the threat that runs them and reads robust accuracy off their outputs.

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

import numpy as np
import torch
from omegaconf import OmegaConf

from attacks import THREATS
from attacks.any_iterate import fooled_at_any_point
from attacks.art_classifier import art_classifier, frozen_parameters, to_numpy
from attacks.base import Threat, ThreatReport
from attacks.evasion_attacks import ATTACKS, NORM_ORDER, AttackSpec, eps_key
from attacks.fmn import security_curve_figure
from attacks.per_image import PER_IMAGE_ARTIFACT, per_image_record
from benchmark.checks import ConfigError
from benchmark.data import Dataset, seeded_indices


# A weaker attack (single step, or gradient-free) beating the iterative white-box attack at the same eps means the
# gradients mislead PGD: gradient masking (Athalye et al. 2018; Carlini et al. 2019, "On evaluating robustness").
MASKING_WEAKER_ROLES = ("single_step", "black_box")


def worst_key(norm: str, family: str = "worst") -> str:
    return family if norm == "linf" else f"{family}_{norm}"  # robust/worst/... stays the L-inf worst case


def worst_case(robust: dict[tuple[str, float], np.ndarray], norm: str) -> dict[float, tuple[float, int]]:
    """eps -> (accuracy, images): the per-image worst case over the attacks of one norm, as AutoAttack reports it.

    An image counts at eps only if it is robust under every attack of the norm at that eps and at every smaller one
    (an image broken at a smaller budget is broken at a larger one, so the curve is monotone); it is measured on the
    images every one of those attacks saw (the shortest per-attack prefix of the cell's subset)."""
    of_norm = {(name, eps): ok for (name, eps), ok in robust.items() if ATTACKS[name].norm == norm}
    if not of_norm:
        return {}
    n = min(len(ok) for ok in of_norm.values())
    worst, standing = {}, np.ones(n, dtype=bool)
    for eps in sorted({eps for _, eps in of_norm}):
        standing = standing & np.logical_and.reduce([ok[:n] for (_, e), ok in of_norm.items() if e == eps])
        worst[eps] = (float(standing.mean()), n)
    return worst


def survivors(robust: dict[tuple[str, float], np.ndarray], norm: str, n: int) -> dict[float, np.ndarray]:
    """eps -> per image of the first `n`: robust under every attack of `norm` run so far at that eps (an attack that
    ran on fewer images constrains only those)."""
    standing: dict[float, np.ndarray] = {}
    for (name, eps), ok in robust.items():
        if ATTACKS[name].norm == norm:
            padded = np.ones(n, dtype=bool)
            padded[:min(n, len(ok))] = ok[:n]
            standing[eps] = standing.get(eps, np.ones(n, dtype=bool)) & padded
    return standing


def pgd_budget(params) -> int:
    """Gradient steps per image of an iterative attack: steps x random starts (ART runs one start when it is 0)
    x target classes (a targeted APGD runs every start against each)."""
    targets = ATTACKS[params.name].targets
    return int(params.max_iter) * max(1, int(params.get("random_restarts", 1))) * (targets(params) if targets else 1)


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
        """Each attack needs budgets of its norm (threat.eps, threat.eps_l2) and runs once (its metrics and per-image
        flags are keyed by its name); a convergence check needs an iterative attack."""
        first: dict[str, int] = {}
        for i, attack in enumerate(cfg.attacks):
            if attack.name in first:
                raise ConfigError(f"threat.attacks[{i}].name={attack.name!r} repeats "
                                  f"threat.attacks[{first[attack.name]}]; allowed: each attack once (its "
                                  f"robust/{attack.name}/... metrics and per-image flags would overwrite the first's)")
            first[attack.name] = i
            norm = ATTACKS[attack.name].norm
            if not eps_list(cfg, norm):
                key = "eps" if norm == "linf" else "eps_l2"
                raise ConfigError(f"threat.{key}={list(cfg.get(key) or [])} is empty but threat.attacks[{i}].name="
                                  f"{attack.name!r} is an {'L-inf' if norm == 'linf' else 'L2'} attack; allowed: at "
                                  f"least one budget (e.g. {key}: ${{dataset.{key}}})")
            if attack.get("survivors_only") and ATTACKS[attack.name].minimal:
                raise ConfigError(f"threat.attacks[{i}].survivors_only=true but {attack.name!r} is a "
                                  "minimal-perturbation attack, run once for every eps; allowed: false")
        block = cfg.get("convergence")
        if block and block.get("multipliers") and not any(ATTACKS[a.name].role == "iterative" for a in cfg.attacks):
            raise ConfigError("threat.convergence.multipliers is set but threat.attacks has no iterative attack; "
                              "allowed: pgd_linf or pgd_l2 in threat.attacks, or convergence: null")

    @classmethod
    def check_classes(cls, cfg, num_classes: int) -> None:
        for i, attack in enumerate(cfg.attacks):
            fewest = ATTACKS[attack.name].min_classes
            if fewest is not None and num_classes < fewest(attack):
                loss = f" with loss={attack.loss!r}" if "loss" in attack else ""
                raise ConfigError(f"threat.attacks[{i}].name={attack.name!r}{loss} needs at least "
                                  f"{fewest(attack)} classes but the data has {num_classes}; allowed: a dataset "
                                  "with that many classes, or another attack")

    def evaluate(self, model, data: Dataset, device: torch.device, seed: int) -> ThreatReport:
        index = seeded_indices(len(data.y_test), self.cfg.subset, seed)  # eval_subset's images
        x, y = data.x_test[index], data.y_test[index]
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
                prior = survivors(robust, spec.norm, n) if attack_cfg.get("survivors_only") else {}
                started = time.perf_counter()
                with counting_predictions(classifier) as queries:
                    results, attacked = self._run(spec, attack_cfg, classifier, x_np[:n], y_np[:n], clean_ok[:n],
                                                  seed, index[:n].numpy(), prior)
                report.metrics[f"time/attack_{name}_s"] = time.perf_counter() - started
                if attack_cfg.get("subset"):
                    report.metrics[f"attack/{name}/subset_size"] = float(n)
                if spec.role == "iterative":
                    report.metrics[f"attack/{name}/budget"] = float(pgd_budget(attack_cfg))
                if spec.query_budget is not None:
                    own = attacked  # the check of each attacked image's output is ours, not the attack's
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
                                                            y_np[:n], clean_ok[:n], seed, index[:n].numpy(), results,
                                                            prior))
                    report.metrics[f"time/convergence_{name}_s"] = time.perf_counter() - started
        for norm in NORM_ORDER:
            for eps, (acc, n) in worst_case(robust, norm).items():
                report.metrics[f"robust/{worst_key(norm)}/{eps_key(eps)}"] = acc
                report.metrics[f"robust/{worst_key(norm)}/subset_size"] = float(n)
        report.artifacts[PER_IMAGE_ARTIFACT] = per_image_record(data.name, seed, index, x, y, clean_ok, robust)
        flag, margin = gradient_masking(robust, float(self.cfg.get("masking_tolerance", 0.0)))
        if margin > -1.0:  # a weaker and a stronger attack ran at a common eps
            report.metrics["robust/gradient_masking_flag"] = flag
            report.metrics["robust/gradient_masking_margin"] = margin
        return report

    def _convergence(self, spec: AttackSpec, params, multipliers: list[int], classifier, x, y, clean_ok, seed, keys,
                     base: dict[float, np.ndarray], prior: dict[float, np.ndarray]) -> dict[str, float]:
        """PGD re-run at `multiplier` x its budget (`threat.convergence.scale`: more random starts or more steps):
        robust accuracy and the gap acc(B) - acc(multiplier x B) per eps (> 0: the cell's budget had not
        converged). `robust/convergence_gap[_l2]` is the gap at the largest multiplier."""
        metrics = {}
        scale = self.cfg.convergence.get("scale", "restarts")
        for multiplier in multipliers:
            stronger, _ = self._run(spec, scaled_budget(params, multiplier, scale), classifier, x, y, clean_ok, seed,
                                    keys, prior)
            for eps, ok in stronger.items():
                gap = float(base[eps].mean() - ok.mean())
                metrics[f"robust/{params.name}_x{multiplier}/{eps_key(eps)}"] = float(ok.mean())
                metrics[f"robust/{worst_key(spec.norm, f'convergence_gap_x{multiplier}')}/{eps_key(eps)}"] = gap
                if multiplier == multipliers[-1]:
                    metrics[f"robust/{worst_key(spec.norm, 'convergence_gap')}/{eps_key(eps)}"] = gap
        return metrics

    def _run(self, spec: AttackSpec, params, classifier, x, y, clean_ok, seed, keys,
             prior: dict[float, np.ndarray] | None = None) -> tuple[dict[float, np.ndarray], int]:
        """(eps -> per image: robust at eps, images attacked). Robust at eps: right on the clean image, and no point
        the attack tried at this eps or at a smaller one fooled the model (every iterate of every PGD start; other
        attacks' outputs). Each eps therefore attacks only the images still robust at the one below (eps = 0: the
        clean point), and the curve is monotone in eps. `keys`: the images' positions in the test split, which
        seed their PGD random starts. `prior` (eps -> per image, `survivors`): images it marks broken count as
        broken at that eps and are not attacked."""
        np.random.seed(seed)  # ART draws random starts / Square's squares from numpy's global generator
        eps_values = sorted(eps_list(self.cfg, spec.norm))
        if spec.minimal:
            x_adv = spec.build(classifier, None, params).generate(x=x, y=y) if any(e > 0 for e in eps_values) else x
            ok_adv = classifier.predict(x_adv, batch_size=params.batch_size).argmax(1) == y
            norms = np.linalg.norm((x_adv - x).reshape(len(x), -1), ord=NORM_ORDER[spec.norm], axis=1)
            self.robust_radii[params.name] = np.where(clean_ok, np.where(ok_adv, np.inf, norms), 0.0)
            return {eps: clean_ok & minimal_robust_correct(ok_adv, norms, eps) for eps in eps_values}, len(x)
        out, robust, attacked = {}, clean_ok.copy(), 0
        for eps in eps_values:
            if prior and eps in prior:
                robust &= prior[eps]
            standing = np.flatnonzero(robust)
            if eps > 0 and len(standing):  # ART rejects a zero step
                np.random.seed(seed)
                attack = spec.build(classifier, eps, params)
                robust[standing] = ~fooled_at_any_point(attack, classifier, x[standing], y[standing], params.batch_size,
                                                        keys[standing], seed)
                attacked += len(standing)
            out[eps] = robust.copy()
        return out, attacked
