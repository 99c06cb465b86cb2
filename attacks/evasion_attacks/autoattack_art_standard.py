"""The reference AutoAttack's composition (Croce & Hein 2020, "standard" version) rebuilt from ART's parts
(`autoattack_art_standard`; the reference itself is `autoattack_standard`, attacks/autoattack_reference.py).

APGD-CE, targeted APGD-DLR against each of the `targets` most likely non-true classes (by the clean logits), and
Square with `square_queries` queries, each run on the images the previous ones left robust (the per-image worst
case). FAB-T, the fourth attack of the reference, is absent from ART and so from this ensemble. ART's own AutoAttack
runs every listed attack untargeted and then targeted over all classes in index order, which is not this
composition, hence the loop here. ART's APGD returns its final iterate where the reference keeps any iterate that
fools the model."""
from __future__ import annotations

from typing import Literal

from attacks.evasion_attacks import EVASION_ATTACKS, NORM_ORDER, AttackConfig
from benchmark.checks import number, whole


class AutoAttackArtStandard(AttackConfig):
    name: Literal["autoattack_art_standard"]
    max_iter: whole(1, 1_000_000)  # reference: 100
    step_fraction: number(1e-6, 10.0)  # reference: 2.0 (APGD's initial step = 2 eps)
    random_restarts: whole(1, 10_000)  # reference: 1
    targets: whole(1, 100_000)  # most likely non-true classes for targeted APGD-DLR (<= classes - 1); reference: 9
    square_queries: whole(1, 1_000_000)  # reference: 5000


@EVASION_ATTACKS.register("autoattack_art_standard", config=AutoAttackArtStandard, norm="linf", role="ensemble")
class ArtStandardAutoAttack:
    """Built as `ArtStandardAutoAttack(classifier, eps, params)`; `generate` runs the composition (module docstring)."""

    def __init__(self, classifier, eps: float, p):
        self.classifier, self.eps, self.p = classifier, eps, p

    def _apgd(self, loss_type: str, targeted: bool):
        from art.attacks.evasion import AutoProjectedGradientDescent

        p = self.p
        return AutoProjectedGradientDescent(
            self.classifier, norm=NORM_ORDER["linf"], eps=self.eps, eps_step=self.eps * p.step_fraction,
            max_iter=p.max_iter, targeted=targeted, nb_random_init=p.random_restarts, batch_size=p.batch_size,
            loss_type=loss_type, verbose=False)

    def generate(self, x, y):
        import numpy as np
        from art.attacks.evasion import SquareAttack

        x_adv = x.copy()
        logits = self.classifier.predict(x, batch_size=self.p.batch_size)
        robust = logits.argmax(1) == y
        ranked = np.argsort(-logits, axis=1)
        others = np.stack([row[row != label] for row, label in zip(ranked, y)])  # non-true classes, likeliest first
        steps = [(self._apgd("cross_entropy", False), None)]
        steps += [(self._apgd("difference_logits_ratio", True), others[:, k])
                  for k in range(min(self.p.targets, others.shape[1]))]
        steps.append((SquareAttack(self.classifier, norm=NORM_ORDER["linf"], eps=self.eps,
                                   max_iter=self.p.square_queries, p_init=0.8, nb_restarts=1,
                                   batch_size=self.p.batch_size, verbose=False), None))
        for attack, target in steps:
            idx = np.flatnonzero(robust)
            if len(idx) == 0:
                break
            attacked = attack.generate(x=x[idx], y=y[idx] if target is None else target[idx])
            fooled = self.classifier.predict(attacked, batch_size=self.p.batch_size).argmax(1) != y[idx]
            x_adv[idx[fooled]] = attacked[fooled]
            robust[idx[fooled]] = False
        return x_adv
