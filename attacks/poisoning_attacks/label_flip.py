"""Label flipping (hand-written: ART has no label-flipping attack). `random`: a fraction `poison_rate` of ALL
labels, each moved to a uniformly drawn different class. `targeted`: a fraction `poison_rate` of the
`source_class`'s labels set to `target_class`."""
from __future__ import annotations

from typing import Literal

from attacks.poisoning_attacks import POISONING_ATTACKS, PoisonConfig
from benchmark.checks import CLASS


class LabelFlip(PoisonConfig):
    kind: Literal["poisoning"]
    attack: Literal["label_flip"]
    mode: Literal["random", "targeted"]
    source_class: CLASS  # targeted only


def flip_labels(y, rate: float, num_classes: int, seed: int, mode: str = "random", source: int | None = None,
                target: int | None = None):
    """The flipped labels (a copy of `y`), the same for a seed (module docstring)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    y = np.array(y, copy=True)
    pool = np.arange(len(y)) if mode == "random" else np.flatnonzero(y == source)
    chosen = rng.choice(pool, size=int(round(rate * len(pool))), replace=False)
    if mode == "random":
        y[chosen] = (y[chosen] + rng.integers(1, num_classes, size=len(chosen))) % num_classes
    else:
        y[chosen] = target
    return y


@POISONING_ATTACKS.register("label_flip", config=LabelFlip)
def label_flip(threat, data, seed: int):
    cfg = threat.cfg
    x, y = data.x_train.numpy(), data.y_train.numpy()
    targeted = cfg.mode == "targeted"
    new_y = flip_labels(y, cfg.poison_rate, data.num_classes, seed, cfg.mode,
                        cfg.source_class if targeted else None, cfg.target_class if targeted else None)
    return x, new_y, new_y != y
