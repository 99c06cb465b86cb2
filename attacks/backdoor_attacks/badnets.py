"""BadNets (Gu et al. 2017), with ART's PoisoningAttackBackdoor: `round(poison_rate * N)` training images (N = the
whole training set), drawn from those not of the target class, are stamped with the trigger and relabelled to
`target_class`."""
from __future__ import annotations

from typing import Literal

from attacks.backdoor_attacks import BACKDOOR_ATTACKS, TRIGGER
from attacks.poisoning_attacks import PoisonConfig


class BadNets(PoisonConfig):
    kind: Literal["backdoor"]
    attack: Literal["badnets"]
    trigger: TRIGGER


@BACKDOOR_ATTACKS.register("badnets", config=BadNets)
def stamp_and_relabel(threat, data, seed: int):
    """Stamp `round(poison_rate * N)` images not of the target class (seeded draw) and relabel them."""
    import numpy as np

    cfg = threat.cfg
    x, y = data.x_train.numpy().copy(), data.y_train.numpy().copy()
    target = cfg.target_class
    rng = np.random.default_rng(seed)
    pool = np.flatnonzero(y != target)
    count = int(round(cfg.poison_rate * len(y)))  # poison_rate is a share of the whole training set
    if count > len(pool):
        raise ValueError(f"threat.poison_rate={cfg.poison_rate} asks for {count} poisoned images but only "
                         f"{len(pool)} of the {len(y)} training images are not of target_class {target}; "
                         f"allowed: poison_rate <= {len(pool) / len(y):.3f}")
    chosen = np.sort(rng.choice(pool, size=count, replace=False))
    changed = np.zeros(len(y), dtype=bool)
    if len(chosen):
        x[chosen] = threat.triggered(x[chosen])
        y[chosen] = target
        changed[chosen] = True
    return x, y, changed
