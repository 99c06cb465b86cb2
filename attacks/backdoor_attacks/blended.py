"""Blended injection (Chen et al. 2017): BadNets' draw and relabelling (attacks/backdoor_attacks/badnets.py), with
its own preset: a seeded noise image blended in with weight `trigger.alpha` (ART insert_image)."""
from __future__ import annotations

from typing import Literal

from attacks.backdoor_attacks import BACKDOOR_ATTACKS, TRIGGER
from attacks.backdoor_attacks.badnets import stamp_and_relabel
from attacks.poisoning_attacks import PoisonConfig


class Blended(PoisonConfig):
    kind: Literal["backdoor"]
    attack: Literal["blended"]
    trigger: TRIGGER


BACKDOOR_ATTACKS.register("blended", config=Blended)(stamp_and_relabel)
