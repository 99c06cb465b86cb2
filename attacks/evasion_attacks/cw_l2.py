"""Carlini-Wagner L2 (Carlini & Wagner 2017): a minimal-perturbation attack, run once (ART CarliniL2Method)."""
from __future__ import annotations

from typing import Literal

from attacks.evasion_attacks import EVASION_ATTACKS, AttackConfig
from benchmark.checks import number, whole


class CarliniL2(AttackConfig):
    name: Literal["cw_l2"]
    learning_rate: number(1e-9, 100.0)
    binary_search_steps: whole(1, 1000)
    max_iter: whole(1, 1_000_000)
    initial_const: number(1e-9, 1e9)


@EVASION_ATTACKS.register("cw_l2", config=CarliniL2, norm="l2", role="minimal")
def cw_l2(classifier, _eps, p):
    from art.attacks.evasion import CarliniL2Method

    return CarliniL2Method(classifier, confidence=0.0, learning_rate=p.learning_rate,
                           binary_search_steps=p.binary_search_steps, max_iter=p.max_iter,
                           initial_const=p.initial_const, batch_size=p.batch_size, verbose=False)
