"""ART's AutoAttack, L-inf and L2, with the component list and budgets from the config (CPU-sized).

ART's AutoAttack is NOT the reference AutoAttack (Croce & Hein 2020): ART's default list is APGD-CE, APGD-DLR,
DeepFool and Square-5000, with its own step sizes and no targeted APGD-T/FAB-T; so numbers are not comparable to
RobustBench (`autoattack_standard` is the reference composition)."""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from attacks.evasion_attacks import EVASION_ATTACKS, NORM_ORDER, AttackConfig
from benchmark.checks import number, whole


class AutoAttack(AttackConfig):
    name: Literal["autoattack_linf", "autoattack_l2"]
    components: Annotated[list[Literal["apgd_ce", "apgd_dlr", "square"]], Field(min_length=1)]
    max_iter: whole(1, 1_000_000)
    step_fraction: number(1e-6, 10.0)
    random_restarts: whole(0, 10_000)
    square_queries: whole(1, 1_000_000)


def _autoattack(classifier, eps, p, norm: str):
    from art.attacks.evasion import AutoAttack as ArtAutoAttack
    from art.attacks.evasion import AutoProjectedGradientDescent, SquareAttack

    parts = {
        "apgd_ce": lambda: AutoProjectedGradientDescent(
            classifier, norm=NORM_ORDER[norm], eps=eps, eps_step=eps * p.step_fraction, max_iter=p.max_iter,
            nb_random_init=p.random_restarts, batch_size=p.batch_size, loss_type="cross_entropy", verbose=False),
        "apgd_dlr": lambda: AutoProjectedGradientDescent(
            classifier, norm=NORM_ORDER[norm], eps=eps, eps_step=eps * p.step_fraction, max_iter=p.max_iter,
            nb_random_init=p.random_restarts, batch_size=p.batch_size, loss_type="difference_logits_ratio",
            verbose=False),
        "square": lambda: SquareAttack(classifier, norm=NORM_ORDER[norm], eps=eps, max_iter=p.square_queries,
                                       nb_restarts=1, batch_size=p.batch_size, verbose=False),
    }
    return ArtAutoAttack(classifier, norm=NORM_ORDER[norm], eps=eps, eps_step=eps * p.step_fraction,
                         attacks=[parts[name]() for name in p.components], batch_size=p.batch_size)


@EVASION_ATTACKS.register("autoattack_linf", config=AutoAttack, norm="linf", role="ensemble")
def autoattack_linf(classifier, eps, p):
    return _autoattack(classifier, eps, p, "linf")


@EVASION_ATTACKS.register("autoattack_l2", config=AutoAttack, norm="l2", role="ensemble")
def autoattack_l2(classifier, eps, p):
    return _autoattack(classifier, eps, p, "l2")
