"""Fast Minimum-Norm (Pintor et al. 2021) through secml-torch's native implementation (attacks/fmn.py wraps it):
each image's smallest successful perturbation in L-inf (`fmn_linf`) or L2 (`fmn_l2`), hence robust accuracy at
every eps at once (the `minimal` role) and a security curve."""
from __future__ import annotations

from typing import Literal

from attacks.evasion_attacks import EVASION_ATTACKS, AttackConfig
from benchmark.checks import number, whole


class Fmn(AttackConfig):
    name: Literal["fmn_linf", "fmn_l2"]
    max_iter: whole(1, 1_000_000)
    step_size: number(1e-6, 1000.0)  # initial step (L2 norm of the normalized gradient step), annealed to 1/100
    gamma: number(1e-6, 1.0)  # initial eps-ball update factor, annealed to 0.001


def _fmn(classifier, p, norm: str):
    from attacks.fmn import FastMinimumNorm

    return FastMinimumNorm(classifier, p, norm)


@EVASION_ATTACKS.register("fmn_linf", config=Fmn, norm="linf", role="minimal")
def fmn_linf(classifier, _eps, p):
    return _fmn(classifier, p, "linf")


@EVASION_ATTACKS.register("fmn_l2", config=Fmn, norm="l2", role="minimal")
def fmn_l2(classifier, _eps, p):
    return _fmn(classifier, p, "l2")
