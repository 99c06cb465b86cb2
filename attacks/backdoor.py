"""Backdoor threats (`threat.kind: backdoor`) with ART's poisoning module: a trigger in the input makes the model
predict `target_class`. The attacks that build the poisoned set (`threat.attack`: badnets, blended, clean_label)
are plugins in attacks/backdoor_attacks/, which also describes the triggers (`threat.trigger`); this module is the
threat around them: the trigger, and the attack success rate on triggered test images.
`threat/dense_success` is `backdoor/asr` on the dense model trained on the poisoned set.
Stage, fine-tune data, cache keys and the clean reference come from attacks/poisoning.DataThreat.
"""
from __future__ import annotations

import functools
import tempfile
from pathlib import Path

import numpy as np
from art.attacks.poisoning import PoisoningAttackBackdoor
from art.attacks.poisoning.perturbations import add_pattern_bd, insert_image

from attacks import THREATS
from attacks.backdoor_attacks import BACKDOOR_ATTACKS
from attacks.poisoning import DataThreat, predictions
from benchmark.data import Dataset, eval_subset


def band_distances(extent: float, height: int, width: int) -> list[int]:
    """The add_pattern_bd distances of a `band` trigger: stamps from the bottom-right corner along the diagonal,
    reaching `extent` of the way to the top-left corner. A stamp at distance d covers rows and columns side - d - 2
    to side - d, so d = side - 2 reaches the opposite corner; the band scales with the image."""
    return list(range(1, max(1, round(extent * (min(height, width) - 2))) + 1))


@THREATS.register("backdoor")
class BackdoorThreat(DataThreat):
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
        return BACKDOOR_ATTACKS[self.cfg.attack].target(self, data, seed)

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
