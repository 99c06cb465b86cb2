"""Threat registry: `threat.kind` -> Threat class (`threat.name` names the YAML preset).

A threat has two hooks (see attacks/base.py): `poison_training_set` may change the training data (and so the
dense model's cache key, via `training_data_key`), and `evaluate` attacks/measures a finished model.
"""
from __future__ import annotations

from attacks.base import Threat, ThreatReport
from attacks.backdoor import BackdoorThreat
from attacks.evasion import ATTACKS, EvasionThreat
from attacks.poisoning import PoisoningThreat
from attacks.smoothing import SmoothingThreat

THREATS: dict[str, type[Threat]] = {
    "evasion": EvasionThreat,
    "poisoning": PoisoningThreat,
    "backdoor": BackdoorThreat,
    "smoothing": SmoothingThreat,
}


def build_threat(cfg) -> Threat:
    if cfg.kind not in THREATS:
        raise ValueError(f"threat.kind={cfg.kind!r} is unknown; allowed: {sorted(THREATS)}")
    return THREATS[cfg.kind](cfg)


__all__ = ["ATTACKS", "THREATS", "Threat", "ThreatReport", "build_threat"]
