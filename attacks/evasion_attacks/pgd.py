"""PGD (Madry et al. 2018), L-inf and L2: `max_iter` steps of `step_fraction` x eps from `random_restarts` random
starts (0: one start at the clean image) (ART ProjectedGradientDescent)."""
from __future__ import annotations

from typing import Literal

from attacks.evasion_attacks import EVASION_ATTACKS, NORM_ORDER, AttackConfig
from benchmark.checks import number, whole


class Pgd(AttackConfig):
    name: Literal["pgd_linf", "pgd_l2"]
    max_iter: whole(1, 1_000_000)
    step_fraction: number(1e-6, 10.0)
    random_restarts: whole(0, 10_000)


def _pgd(classifier, eps, p, norm: str):
    from art.attacks.evasion import ProjectedGradientDescent

    return ProjectedGradientDescent(classifier, norm=NORM_ORDER[norm], eps=eps, eps_step=eps * p.step_fraction,
                                    max_iter=p.max_iter, num_random_init=p.random_restarts,
                                    batch_size=p.batch_size, verbose=False)


@EVASION_ATTACKS.register("pgd_linf", config=Pgd, norm="linf", role="iterative")
def pgd_linf(classifier, eps, p):
    return _pgd(classifier, eps, p, "linf")


@EVASION_ATTACKS.register("pgd_l2", config=Pgd, norm="l2", role="iterative")
def pgd_l2(classifier, eps, p):
    return _pgd(classifier, eps, p, "l2")
