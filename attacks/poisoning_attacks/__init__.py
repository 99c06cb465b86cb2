"""Poisoning attacks (`threat.kind: poisoning`): `threat.attack` -> a function(threat, data, seed) -> (x_train,
y_train, changed), registered by its module.

An attack is one module in attacks/poisoning_attacks/ (discovered, not listed) plus conf/threat/<name>.yaml. The
module declares its config model (a `PoisonConfig` with `kind: Literal["poisoning"]`, `attack: Literal[name]` and
its own keys) and registers the function that builds the poisoned training set with
`@POISONING_ATTACKS.register(name, config=...)`: it gets the threat (`threat.cfg` is the config; attacks/poisoning.py
`PoisoningThreat`), the clean `benchmark.data.Dataset` and the seed, and returns the training images and labels
(numpy) and a mask of the examples it changed, the same for a seed. Where pruning meets the poison, the cache keys,
the clean reference and the metrics are the threat's (attacks/poisoning.py). Attack modules import torch and ART
inside their functions, so that a config mistake is reported before they are imported (benchmark/validate.py).

`PoisonConfig` and `Proxy` are also the base of the backdoor attacks (attacks/backdoor_attacks/).
"""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from benchmark.checks import CLASS, COUNT, LR, UNIT, Group, whole
from benchmark.registry import Registry

POISONING_ATTACKS = Registry("threat.attack", "attacks.poisoning_attacks", plugins="prunesec.poisoning_attacks")


class PoisonConfig(Group):
    """Keys every training-data threat has (attacks/poisoning.py explains stage and finetune_data)."""
    name: str
    subset: COUNT  # seeded test images the threat metrics are measured on
    poison_rate: UNIT
    target_class: CLASS
    stage: Literal["poison_then_prune", "prune_then_poison"]
    finetune_data: Literal["clean", "poisoned", "defender"]
    clean_reference: bool
    effective_threshold: UNIT  # threat/effective: the dense model's success reaches it


class Proxy(Group):
    """The clean model an attacker trains for the clean-label attacks (attacks/poisoning.py proxy_classifier)."""
    model: Annotated[str, Field(min_length=1)]  # a registered model (models/), checked by benchmark/validate.py
    epochs: whole(1, 10_000)
    lr: LR
    # its seed is the cell's plus this (initialisation and batch order); 0 with the victim's architecture makes
    # the proxy the victim's twin, a white-box attacker
    seed_offset: whole(0, 1_000_000)


__all__ = ["POISONING_ATTACKS", "PoisonConfig", "Proxy"]
