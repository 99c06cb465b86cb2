"""Clean-label backdoor (Turner et al. 2019), with ART's PoisoningAttackCleanLabelBackdoor: `poison_rate` is ART's
`pp_poison`, a share of the TARGET class's images (drawn with replacement), pushed away from their class with PGD
on a proxy model, then stamped with the trigger; labels unchanged."""
from __future__ import annotations

from typing import Literal

from attacks.backdoor_attacks import BACKDOOR_ATTACKS, TRIGGER
from attacks.poisoning_attacks import PoisonConfig, Proxy
from benchmark.checks import UNIT, Group, number, whole


class TriggerPgd(Group):
    eps: UNIT
    eps_step: UNIT
    max_iter: whole(1, 1_000_000)


class CleanLabel(PoisonConfig):
    kind: Literal["backdoor"]
    attack: Literal["clean_label"]
    poison_rate: number(0.0, 1.0, high_open=True)  # ART's pp_poison must be < 1
    trigger: TRIGGER
    pgd: TriggerPgd
    proxy: Proxy


@BACKDOOR_ATTACKS.register("clean_label", config=CleanLabel)
def clean_label(threat, data, seed: int):
    import numpy as np
    from art.attacks.poisoning import PoisoningAttackCleanLabelBackdoor

    from attacks.poisoning import proxy_classifier

    cfg, pgd = threat.cfg, threat.cfg.pgd
    attack = PoisoningAttackCleanLabelBackdoor(
        threat.backdoor(tuple(data.x_train.shape[1:])), proxy_classifier(cfg.proxy, data, seed),
        np.eye(data.num_classes, dtype=np.float32)[cfg.target_class], pp_poison=min(cfg.poison_rate, 0.999),
        eps=pgd.eps, eps_step=pgd.eps_step, max_iter=pgd.max_iter)
    attack.attack.set_params(verbose=False)
    x, y = data.x_train.numpy(), data.y_train.numpy()
    np.random.seed(seed)  # ART draws the poisoned indices (with replacement) and PGD starts from numpy's global RNG
    x_poisoned, _ = attack.poison(x, np.eye(data.num_classes, dtype=np.float32)[y])
    changed = np.any(x_poisoned.reshape(len(y), -1) != x.reshape(len(y), -1), axis=1)
    return np.clip(x_poisoned, 0.0, 1.0), y, changed  # clean label: labels unchanged
