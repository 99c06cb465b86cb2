"""DeepFool (Moosavi-Dezfooli et al. 2016): a minimal-perturbation L2 attack, run once (ART DeepFool)."""
from __future__ import annotations

from typing import Literal

from attacks.evasion_attacks import EVASION_ATTACKS, AttackConfig
from benchmark.checks import number, whole


class DeepFool(AttackConfig):
    name: Literal["deepfool"]
    max_iter: whole(1, 1_000_000)
    overshoot: number(0.0, 10.0)
    nb_grads: whole(2, 100_000)


@EVASION_ATTACKS.register("deepfool", config=DeepFool, norm="l2", role="minimal")
def deepfool(classifier, _eps, p):
    from art.attacks.evasion import DeepFool as ArtDeepFool

    return ArtDeepFool(classifier, max_iter=p.max_iter, epsilon=p.overshoot, nb_grads=p.nb_grads,
                       batch_size=p.batch_size, verbose=False)
