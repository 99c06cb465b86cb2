"""Backdoor attacks (`threat.kind: backdoor`): `threat.attack` -> a function(threat, data, seed) -> (x_train,
y_train, changed), registered by its module.

An attack is one module in attacks/backdoor_attacks/ (discovered, not listed) plus conf/threat/<name>.yaml. The
module declares its config model (a `PoisonConfig` with `kind: Literal["backdoor"]`, `attack: Literal[name]`,
usually `trigger: TRIGGER`, and its own keys) and registers the function that builds the poisoned training set
with `@BACKDOOR_ATTACKS.register(name, config=...)`: it gets the threat (attacks/backdoor.py `BackdoorThreat`:
`threat.cfg` is the config, `threat.triggered(x)` stamps the trigger, `threat.backdoor(shape)` is ART's backdoor),
the clean `benchmark.data.Dataset` and the seed, and returns the training images and labels (numpy) and a mask of
the examples it changed, the same for a seed. The trigger, the attack success rate on triggered test images and
everything else about the cell are the threat's. Attack modules import torch and ART inside their functions.

The triggers (`trigger.kind`): `pattern` (ART add_pattern_bd stamps at given pixel distances from the bottom-right
corner), `band` (the same stamps along the diagonal, reaching a fraction `extent` of the way to the opposite corner:
the same share of any image size) or `blend` (a seeded noise image blended in, ART insert_image).
"""
from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import Field

from benchmark.checks import SEED, UNIT, Group, number, whole
from benchmark.registry import Registry

BACKDOOR_ATTACKS = Registry("threat.attack", "attacks.backdoor_attacks", plugins="prunesec.backdoor_attacks")


class PatternTrigger(Group):
    kind: Literal["pattern"]
    distances: Annotated[list[whole(1, 1000)], Field(min_length=1)]
    pixel_value: UNIT


class BandTrigger(Group):
    kind: Literal["band"]
    extent: number(0.0, 1.0, low_open=True)  # share of the way from the bottom-right to the top-left corner
    pixel_value: UNIT


class BlendTrigger(Group):
    kind: Literal["blend"]
    alpha: UNIT
    seed: SEED


TRIGGER = Annotated[Union[PatternTrigger, BandTrigger, BlendTrigger], Field(discriminator="kind")]

__all__ = ["BACKDOOR_ATTACKS", "TRIGGER"]
