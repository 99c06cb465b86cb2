"""Backdoor threats (`threat.kind: backdoor`) with ART's poisoning module: a trigger in the input makes the model
predict `target_class`. Attacks (`threat.attack`):
- `badnets` (Gu et al. 2017): ART PoisoningAttackBackdoor + add_pattern_bd; `round(poison_rate * N)` training
  images (N = the whole training set), drawn from those not of the target class, are stamped and relabelled.
- `blended` (Chen et al. 2017): the same draw, with a seeded noise image blended in with weight `trigger.alpha`
  (ART insert_image).
- `clean_label` (Turner et al. 2019): ART PoisoningAttackCleanLabelBackdoor; `poison_rate` is ART's `pp_poison`, a
  share of the TARGET class's images (drawn with replacement), pushed away from their class with PGD on a proxy
  model, then stamped; labels unchanged.
The trigger (`trigger.kind`) is `pattern` (ART add_pattern_bd stamps at given pixel distances from the bottom-right
corner), `band` (the same stamps along the diagonal, reaching a fraction `extent` of the way to the opposite corner:
the same share of any image size) or `blend` (the noise image), for any attack.
`threat/dense_success` is `backdoor/asr` on the dense model trained on the poisoned set.
Stage, fine-tune data, cache keys and the clean reference come from attacks/poisoning.DataThreat.
"""
from __future__ import annotations

import functools
import tempfile
from pathlib import Path

import numpy as np
from art.attacks.poisoning import PoisoningAttackBackdoor, PoisoningAttackCleanLabelBackdoor
from art.attacks.poisoning.perturbations import add_pattern_bd, insert_image

from attacks import THREATS
from attacks.evasion import eval_subset
from attacks.poisoning import DataThreat, predictions, proxy_classifier
from benchmark.data import Dataset


def one_hot(label: int, num_classes: int) -> np.ndarray:
    return np.eye(num_classes, dtype=np.float32)[label]


def band_distances(extent: float, height: int, width: int) -> list[int]:
    """The add_pattern_bd distances of a `band` trigger: stamps from the bottom-right corner along the diagonal,
    reaching `extent` of the way to the top-left corner. A stamp at distance d covers rows and columns side - d - 2
    to side - d, so d = side - 2 reaches the opposite corner; the band scales with the image."""
    return list(range(1, max(1, round(extent * (min(height, width) - 2))) + 1))


@THREATS.register("backdoor")
class BackdoorThreat(DataThreat):
    ATTACKS = ("badnets", "blended", "clean_label")
    SUCCESS_METRIC = "backdoor/asr"

    def __init__(self, cfg):
        super().__init__(cfg)
        self._trigger_dir = tempfile.TemporaryDirectory(prefix="prunesec-trigger-")  # the blend trigger's PNG
        self._test_triggered: tuple[Dataset, np.ndarray] | None = None

    # ---- the trigger --------------------------------------------------------------------------------------
    def backdoor(self, shape: tuple[int, ...]) -> PoisoningAttackBackdoor:
        """ART's backdoor for images of `shape` (C, H, W); NCHW needs channels_first=True."""
        trigger = self.cfg.trigger
        if trigger.kind == "blend":
            path = self._noise_trigger(shape, trigger.seed)
            return PoisoningAttackBackdoor(functools.partial(
                insert_image, backdoor_path=path, channels_first=True, random=False, size=tuple(shape[1:]),
                mode="L" if shape[0] == 1 else "RGB", blend=trigger.alpha))
        # add_pattern_bd stamps 4 pixels near the bottom-right corner; one stamp per distance makes the patch
        # bigger, so that the backdoor takes on small images within a short training (tests/test_poisoning.py).
        distances = trigger.distances if trigger.kind == "pattern" else band_distances(trigger.extent, *shape[1:])
        return PoisoningAttackBackdoor([
            functools.partial(add_pattern_bd, distance=d, pixel_value=trigger.pixel_value, channels_first=True)
            for d in distances])

    def _noise_trigger(self, shape: tuple[int, ...], seed: int) -> str:
        """A seeded uniform-noise image saved as the PNG that ART's insert_image reads."""
        from PIL import Image

        path = Path(self._trigger_dir.name) / f"noise_{seed}_{'x'.join(map(str, shape))}.png"
        if not path.exists():
            noise = (np.random.default_rng(seed).random((shape[1], shape[2], shape[0])) * 255).astype(np.uint8)
            Image.fromarray(noise.squeeze(-1) if shape[0] == 1 else noise).save(path)
        return str(path)

    def triggered(self, x: np.ndarray) -> np.ndarray:
        poisoned, _ = self.backdoor(x.shape[1:]).poison(x, np.array([self.cfg.target_class]), broadcast=True)
        return poisoned.astype(np.float32)

    # ---- poisoning ----------------------------------------------------------------------------------------
    def _poison(self, data: Dataset, seed: int):
        if self.cfg.attack == "clean_label":
            return self._clean_label(data, seed)
        x, y = data.x_train.numpy().copy(), data.y_train.numpy().copy()
        target = self.cfg.target_class
        rng = np.random.default_rng(seed)
        pool = np.flatnonzero(y != target)
        count = int(round(self.cfg.poison_rate * len(y)))  # poison_rate is a share of the whole training set
        if count > len(pool):
            raise ValueError(f"threat.poison_rate={self.cfg.poison_rate} asks for {count} poisoned images but only "
                             f"{len(pool)} of the {len(y)} training images are not of target_class {target}; "
                             f"allowed: poison_rate <= {len(pool) / len(y):.3f}")
        chosen = np.sort(rng.choice(pool, size=count, replace=False))
        changed = np.zeros(len(y), dtype=bool)
        if len(chosen):
            x[chosen] = self.triggered(x[chosen])
            y[chosen] = target
            changed[chosen] = True
        return x, y, changed

    def _clean_label(self, data: Dataset, seed: int):
        pgd = self.cfg.pgd
        attack = PoisoningAttackCleanLabelBackdoor(
            self.backdoor(tuple(data.x_train.shape[1:])), proxy_classifier(self.cfg.proxy, data, seed),
            one_hot(self.cfg.target_class, data.num_classes), pp_poison=min(self.cfg.poison_rate, 0.999),
            eps=pgd.eps, eps_step=pgd.eps_step, max_iter=pgd.max_iter)
        attack.attack.set_params(verbose=False)
        x, y = data.x_train.numpy(), data.y_train.numpy()
        np.random.seed(seed)  # ART draws the poisoned indices (with replacement) and PGD starts from numpy's global RNG
        x_poisoned, _ = attack.poison(x, np.eye(data.num_classes, dtype=np.float32)[y])
        changed = np.any(x_poisoned.reshape(len(y), -1) != x.reshape(len(y), -1), axis=1)
        return np.clip(x_poisoned, 0.0, 1.0), y, changed  # clean label: labels unchanged

    # ---- evaluation ---------------------------------------------------------------------------------------
    def threat_metrics(self, model, data, device, seed) -> dict[str, float]:
        target = self.cfg.target_class
        x, y = (t.numpy() for t in eval_subset(data, self.cfg.subset, seed))
        if self._test_triggered is None or self._test_triggered[0] is not data:  # reused by the per-epoch tracker
            self._test_triggered = (data, self.triggered(x))
        x_trig = self._test_triggered[1]
        pred_trig, pred_clean = predictions(model, x_trig, device), predictions(model, x, device)
        other = y != target
        return {
            "backdoor/asr": float((pred_trig[other] == target).mean()),
            "backdoor/clean_acc_triggered": float((pred_trig == y).mean()),
            "backdoor/target_rate_clean": float((pred_clean[other] == target).mean()),
        }

    def reference_metrics(self, reference, model_metrics, data, device, seed) -> dict[str, float]:
        metrics = super().reference_metrics(reference, model_metrics, data, device, seed)
        metrics["backdoor/asr_ref"] = self.threat_metrics(reference, data, device, seed)["backdoor/asr"]
        return metrics
