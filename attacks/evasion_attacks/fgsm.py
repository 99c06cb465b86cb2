"""FGSM (Goodfellow et al. 2015): one signed-gradient step of size eps (ART FastGradientMethod)."""
from __future__ import annotations

from typing import Literal

from attacks.evasion_attacks import EVASION_ATTACKS, NORM_ORDER, AttackConfig


class Fgsm(AttackConfig):
    name: Literal["fgsm"]


@EVASION_ATTACKS.register("fgsm", config=Fgsm, norm="linf", role="single_step")
def fgsm(classifier, eps, p):
    from art.attacks.evasion import FastGradientMethod

    return FastGradientMethod(classifier, norm=NORM_ORDER["linf"], eps=eps, batch_size=p.batch_size)
