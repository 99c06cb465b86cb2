"""Threat registry: `threat.kind` -> Threat class (`threat.name` names the YAML preset).

Each module of this package that defines a threat kind registers its class with `@THREATS.register(kind)`;
the modules are discovered. A threat's `plan` decides the cell's training data by role (and so the cache keys of
its dense and pruned models), and `evaluate` attacks/measures a finished model (see attacks/base.py).
"""
from __future__ import annotations

from benchmark.registry import Registry

THREATS = Registry("threat.kind", "attacks")


def build_threat(cfg):
    return THREATS[cfg.kind].target(cfg)


__all__ = ["THREATS", "build_threat"]
