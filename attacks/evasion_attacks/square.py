"""Square Attack (Andriushchenko et al. 2020), L-inf and L2: gradient-free random search, `max_iter` queries per
restart (ART SquareAttack)."""
from __future__ import annotations

from typing import Literal

from attacks.evasion_attacks import EVASION_ATTACKS, NORM_ORDER, AttackConfig
from benchmark.checks import number, whole


class Square(AttackConfig):
    name: Literal["square_linf", "square_l2"]
    max_iter: whole(1, 1_000_000)
    p_init: number(1e-6, 1.0)
    restarts: whole(1, 10_000)


def queries(p) -> int:
    return p.max_iter * p.restarts


def _square(classifier, eps, p, norm: str):
    from art.attacks.evasion import SquareAttack

    return SquareAttack(classifier, norm=NORM_ORDER[norm], eps=eps, max_iter=p.max_iter, p_init=p.p_init,
                        nb_restarts=p.restarts, batch_size=p.batch_size, verbose=False)


@EVASION_ATTACKS.register("square_linf", config=Square, norm="linf", role="black_box", query_budget=queries)
def square_linf(classifier, eps, p):
    return _square(classifier, eps, p, "linf")


@EVASION_ATTACKS.register("square_l2", config=Square, norm="l2", role="black_box", query_budget=queries)
def square_l2(classifier, eps, p):
    return _square(classifier, eps, p, "l2")
