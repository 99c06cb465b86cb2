"""Threat registry: `threat.kind` -> Threat class (`threat.name` names the YAML preset).

Each module of this package that defines a threat kind registers its class with `@THREATS.register(kind)`;
the modules are discovered. A threat has two hooks (see attacks/base.py): `poison_training_set` may change the
training data (and so the dense model's cache key, via `training_data_key`), and `evaluate` attacks/measures a
finished model.
"""
from __future__ import annotations

from benchmark.registry import Registry

THREATS = Registry("threat.kind", "attacks")


def build_threat(cfg):
    return THREATS[cfg.kind].target(cfg)


__all__ = ["THREATS", "build_threat"]
