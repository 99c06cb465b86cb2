"""Clean-label feature collision (Shafahi et al. 2018) with ART's FeatureCollisionAttack: training images of
`target_class` are perturbed to collide in a proxy model's feature space with a target test image of
`source_class`; their labels stay correct (clean label)."""
from __future__ import annotations

from typing import Literal

from attacks.poisoning_attacks import POISONING_ATTACKS, PoisonConfig, Proxy
from benchmark.checks import CLASS, UNIT, number, whole


class FeatureCollision(PoisonConfig):
    kind: Literal["poisoning"]
    attack: Literal["feature_collision"]
    source_class: CLASS
    num_targets: whole(1, 10_000)
    feature_layer: whole(-1000, 1000)  # ART layer index; negative counts from the end
    max_iter: whole(1, 1_000_000)
    learning_rate: number(1e-12, 1e6)
    similarity_coeff: number(0.0, 1e9)
    watermark: UNIT
    proxy: Proxy


@POISONING_ATTACKS.register("feature_collision", config=FeatureCollision)
def feature_collision(threat, data, seed: int):
    """`round(poison_rate * N)` base images of `target_class` (at most all of them), split among the
    `num_targets` targets (`threat.targets`), each part collided with its target."""
    import numpy as np
    from art.attacks.poisoning import FeatureCollisionAttack

    from attacks.art_classifier import to_numpy
    from attacks.poisoning import proxy_classifier

    cfg = threat.cfg
    classifier = proxy_classifier(cfg.proxy, data, seed)
    x, y = data.x_train.numpy().copy(), data.y_train.numpy()
    rng = np.random.default_rng(seed)
    bases = rng.choice(np.flatnonzero(y == cfg.target_class),
                       size=min(int(round(cfg.poison_rate * len(y))), int((y == cfg.target_class).sum())),
                       replace=False)
    layer = cfg.feature_layer % len(classifier.layer_names)  # -2: the features feeding the head
    changed = np.zeros(len(y), dtype=bool)
    for target_idx, part in zip(threat.targets(data, seed), np.array_split(bases, cfg.num_targets)):
        if len(part) == 0:
            continue
        attack = FeatureCollisionAttack(
            classifier, to_numpy(data.x_test[target_idx : target_idx + 1]), layer, max_iter=cfg.max_iter,
            learning_rate=cfg.learning_rate, similarity_coeff=cfg.similarity_coeff,
            watermark=cfg.watermark, verbose=False)
        x[part], _ = attack.poison(x[part])  # ART returns the proxy's predictions as labels: keep the true ones
        changed[part] = True
    return np.clip(x, 0.0, 1.0), y, changed
