"""Evasion attacks: `threat.attacks[i].name` -> a builder(classifier, eps, params) -> ART evasion attack.

An attack is one module in attacks/evasion_attacks/ (discovered, not listed) plus its entry in a threat YAML
(conf/threat/). The module declares its config model (an `AttackConfig` with its own keys and a
`name: Literal[name]` field) and registers its builder with
`@EVASION_ATTACKS.register(name, config=..., norm=..., role=...)`; the metadata tells attacks/evasion.py how to run
it and read it (see `EVASION_ATTACKS.metadata`). Attack modules import ART inside their builders, so that a config
mistake is reported before ART and torch are imported (benchmark/validate.py).

The builder gets the ART classifier of the model, the eps it runs at (None for a minimal-perturbation attack, run
once) and its config entry `params`; what it returns needs only `generate(x=..., y=...)`.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Callable

from benchmark.checks import BATCH, COUNT, Group
from benchmark.registry import Registry

# The order of each norm as ART takes it (`norm=`).
NORM_ORDER = {"linf": math.inf, "l2": 2}

EVASION_ATTACKS = Registry("threat.attacks.name", "attacks.evasion_attacks", metadata={
    "norm": "linf",  # "linf" | "l2": which eps list it runs at (threat.eps or threat.eps_l2)
    # "iterative" (white-box, the reference), "single_step", "black_box", "ensemble", or "minimal"
    # (minimal perturbation: run once, robust accuracy read off at every eps)
    "role": "iterative",
    "query_budget": None,  # params -> model queries per image allowed (black-box attacks), logged beside the count
    "min_classes": None,  # params -> the fewest classes the attack works with (checked against the data's)
    "targets": None,  # params -> target classes each start is run against (a targeted attack's budget); None: 1
}, plugins="prunesec.evasion_attacks")


class AttackConfig(Group):
    """Keys every evasion attack has; an attack's config model adds its own and a `name: Literal[name]` field."""
    subset: COUNT | None = None  # a prefix of the threat's subset (expensive attacks)
    # true: at each eps, attack only the images every earlier attack of its norm left robust (AutoAttack's rule);
    # its robust/<name>/eps_<e> is then the robust accuracy under it and those attacks together
    survivors_only: bool = False
    batch_size: BATCH


@dataclass(frozen=True)
class AttackSpec:
    build: Callable  # (classifier, eps or None, params) -> ART evasion attack
    norm: str  # "linf" | "l2": which eps list it runs at
    role: str  # "iterative" (white-box, the reference), "single_step", "black_box", "ensemble", "minimal"
    query_budget: Callable | None = None  # params -> model queries per image allowed (black-box attacks)
    min_classes: Callable | None = None  # params -> the fewest classes the attack works with
    targets: Callable | None = None  # params -> target classes each start is run against (None: untargeted)

    @property
    def minimal(self) -> bool:
        return self.role == "minimal"


class AttackSpecs(Mapping):
    """The registry read as name -> AttackSpec (what attacks/evasion.py runs)."""

    def __getitem__(self, name: str) -> AttackSpec:
        entry = EVASION_ATTACKS[name]
        return AttackSpec(entry.target, entry.norm, entry.role, entry.query_budget, entry.min_classes, entry.targets)

    def __iter__(self):
        return iter(EVASION_ATTACKS)

    def __len__(self) -> int:
        return len(EVASION_ATTACKS.names())


ATTACKS = AttackSpecs()


def eps_key(eps: float) -> str:
    return f"eps_{eps:g}"  # MLflow metric names may not contain '='


__all__ = ["ATTACKS", "AttackConfig", "AttackSpec", "EVASION_ATTACKS", "NORM_ORDER", "eps_key"]
