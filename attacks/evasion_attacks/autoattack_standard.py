"""The standard AutoAttack (Croce & Hein 2020) through its reference implementation (the pyautoattack packaging of
fra31/auto-attack; attacks/autoattack_reference.py wraps it): APGD-CE, APGD-T, FAB-T and Square, each on the images
the previous ones left robust, L-inf (`autoattack_standard`) or L2 (`autoattack_standard_l2`)."""
from __future__ import annotations

from typing import Literal

from attacks.evasion_attacks import EVASION_ATTACKS, AttackConfig
from benchmark.checks import whole


class AutoAttackReference(AttackConfig):
    name: Literal["autoattack_standard", "autoattack_standard_l2"]
    max_iter: whole(1, 1_000_000)  # APGD and FAB iterations; the reference's standard version: 100
    square_queries: whole(1, 1_000_000)  # the reference's standard version: 5000


def _reference(classifier, eps, p, norm: str):
    from attacks.autoattack_reference import ReferenceAutoAttack

    return ReferenceAutoAttack(classifier, eps, p, norm)


@EVASION_ATTACKS.register("autoattack_standard", config=AutoAttackReference, norm="linf", role="ensemble")
def autoattack_standard(classifier, eps, p):
    return _reference(classifier, eps, p, "linf")


@EVASION_ATTACKS.register("autoattack_standard_l2", config=AutoAttackReference, norm="l2", role="ensemble")
def autoattack_standard_l2(classifier, eps, p):
    return _reference(classifier, eps, p, "l2")
