"""APGD (Croce & Hein 2020), L-inf and L2, through the reference implementation (attacks/autoattack_reference.py
wraps pyautoattack's `APGDAttack` / `APGDAttack_targeted`, fra31/auto-attack's code): PGD whose step size halves
when progress stalls, from `random_restarts` random starts, on

- `ce`: the cross-entropy (AutoAttack's APGD-CE);
- `dlr`: the difference of logits ratio, -(z_y - max_{j != y} z_j) / (z_1 - z_3) over the sorted logits z: a margin
  loss scaled by the logits' spread, so that it keeps a gradient where a saturated softmax gives cross-entropy none
  (the first loss to try on a pruned model whose logits have grown);
- `dlr_targeted`: the targeted DLR against each of the `target_classes` likeliest other classes in turn
  (AutoAttack's APGD-T).

`apgd_t_linf` / `apgd_t_l2` are APGD-T under AutoAttack's own name for it, so that one threat can run it after an
untargeted APGD (a threat lists each attack name once), as AutoAttack runs APGD-T after APGD-CE.

As in the reference, an image counts as broken when any iterate of any restart (and target) fooled the model.
"""
from __future__ import annotations

from typing import Literal

from attacks.evasion_attacks import EVASION_ATTACKS, AttackConfig
from benchmark.checks import whole

# The logits the loss reads: the DLR denominator needs the third largest, its targeted form the fourth.
MIN_CLASSES = {"ce": 2, "dlr": 3, "dlr_targeted": 4}
TARGET_CLASSES = 9  # the reference's APGD-T: the 9 likeliest other classes


class _ApgdBudget(AttackConfig):
    max_iter: whole(1, 1_000_000)
    random_restarts: whole(1, 10_000)
    # a targeted loss: how many of the likeliest other classes (at most C - 1 run)
    target_classes: whole(1, 100_000) = TARGET_CLASSES


class Apgd(_ApgdBudget):
    name: Literal["apgd_linf", "apgd_l2"]
    loss: Literal["ce", "dlr", "dlr_targeted"]


class ApgdTargeted(_ApgdBudget):
    name: Literal["apgd_t_linf", "apgd_t_l2"]


def _loss(p) -> str:
    return "dlr_targeted" if p.name.startswith("apgd_t_") else p.loss


def _min_classes(p) -> int:
    return MIN_CLASSES[_loss(p)]


def _targets(p) -> int:
    """Target classes each start runs against, as configured (the attack runs at most C - 1 of them)."""
    return int(p.get("target_classes", TARGET_CLASSES)) if _loss(p) == "dlr_targeted" else 1


def _apgd(classifier, eps, p, norm: str):
    from attacks.autoattack_reference import ReferenceApgd

    return ReferenceApgd(classifier, eps, p, norm, _loss(p), _targets(p))


def _register(name: str, config, norm: str):
    return EVASION_ATTACKS.register(name, config=config, norm=norm, role="iterative", min_classes=_min_classes,
                                    targets=_targets)


# One builder per norm serves both names: the loss comes from the entry (`_loss`).
@_register("apgd_t_linf", ApgdTargeted, "linf")
@_register("apgd_linf", Apgd, "linf")
def apgd_linf(classifier, eps, p):
    return _apgd(classifier, eps, p, "linf")


@_register("apgd_t_l2", ApgdTargeted, "l2")
@_register("apgd_l2", Apgd, "l2")
def apgd_l2(classifier, eps, p):
    return _apgd(classifier, eps, p, "l2")
