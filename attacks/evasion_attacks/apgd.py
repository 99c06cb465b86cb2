"""APGD (Croce & Hein 2020), L-inf and L2, through the reference implementation (attacks/autoattack_reference.py
wraps pyautoattack's `APGDAttack` / `APGDAttack_targeted`, fra31/auto-attack's code): PGD whose step size halves
when progress stalls, from `random_restarts` random starts, on

- `ce`: the cross-entropy (AutoAttack's APGD-CE);
- `dlr`: the difference of logits ratio, -(z_y - max_{j != y} z_j) / (z_1 - z_3) over the sorted logits z: a margin
  loss scaled by the logits' spread, so that it keeps a gradient where a saturated softmax gives cross-entropy none
  (the first loss to try on a pruned model whose logits have grown);
- `dlr_targeted`: the targeted DLR against each of the `target_classes` likeliest other classes in turn
  (AutoAttack's APGD-T).

As in the reference, an image counts as broken when any iterate of any restart (and target) fooled the model.
"""
from __future__ import annotations

from typing import Literal

from attacks.evasion_attacks import EVASION_ATTACKS, AttackConfig
from benchmark.checks import whole

# The logits the loss reads: the DLR denominator needs the third largest, its targeted form the fourth.
MIN_CLASSES = {"ce": 2, "dlr": 3, "dlr_targeted": 4}


class Apgd(AttackConfig):
    name: Literal["apgd_linf", "apgd_l2"]
    loss: Literal["ce", "dlr", "dlr_targeted"]
    max_iter: whole(1, 1_000_000)
    random_restarts: whole(1, 10_000)
    target_classes: whole(1, 100_000) = 9  # dlr_targeted: how many of the likeliest other classes (at most C - 1)


def _apgd(classifier, eps, p, norm: str):
    from attacks.autoattack_reference import ReferenceApgd

    return ReferenceApgd(classifier, eps, p, norm)


def _min_classes(p) -> int:
    return MIN_CLASSES[p.loss]


@EVASION_ATTACKS.register("apgd_linf", config=Apgd, norm="linf", role="iterative", min_classes=_min_classes)
def apgd_linf(classifier, eps, p):
    return _apgd(classifier, eps, p, "linf")


@EVASION_ATTACKS.register("apgd_l2", config=Apgd, norm="l2", role="iterative", min_classes=_min_classes)
def apgd_l2(classifier, eps, p):
    return _apgd(classifier, eps, p, "l2")
