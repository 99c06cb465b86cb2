"""The reference AutoAttack (Croce & Hein 2020), as an attack of this suite.

`pyautoattack` packages fra31/auto-attack: the same APGD, FAB and Square code (docs/threats.md says what differs:
imports, logging, keyword arguments). Its "standard" version runs APGD-CE, APGD-T and FAB-T against the 9 likeliest
other classes and Square with 5,000 queries, each on the images the previous ones left robust; an image counts as
broken as soon as any iterate of any of them fools the model. The wrapper hands it the torch model behind the ART
classifier (inputs in [0, 1] pixel space), the classifier's device, the eps and a seed, and returns numpy like an
ART attack. `max_iter` / `square_queries` below the reference's 100 / 5,000 give a CPU-sized budget of the same
composition (the run's params say which).
"""
from __future__ import annotations

import logging

import numpy as np
import torch

# The reference logs its progress (per attack, per batch) to this logger at DEBUG/INFO; its checks' warnings
# (a randomized or dynamic model, too few classes) stay visible.
logging.getLogger("auto-attack").setLevel(logging.WARNING)

REFERENCE_ITERATIONS = 100  # APGD and FAB iterations of the standard version
REFERENCE_SQUARE_QUERIES = 5000
_NORM = {"linf": "Linf", "l2": "L2"}


class ReferenceAutoAttack:
    """`generate(x, y)` -> adversarial x: the reference standard AutoAttack at one eps."""

    def __init__(self, classifier, eps: float, p, norm: str):
        self.classifier, self.eps, self.p, self.norm = classifier, eps, p, norm

    def _adversary(self, model: torch.nn.Module, seed: int):
        from pyautoattack import AutoAttack

        adversary = AutoAttack(model, norm=_NORM[self.norm], eps=self.eps, version="standard", seed=seed,
                               device=self.classifier.device)
        # A dataset with fewer than 10 classes has fewer than 9 other classes to target.
        targets = min(adversary.apgd_targeted.n_target_classes, self.classifier.nb_classes - 1)
        adversary.apgd_targeted.n_target_classes = adversary.fab.n_target_classes = targets
        iterations = int(self.p.max_iter)
        if iterations != REFERENCE_ITERATIONS:
            for apgd in (adversary.apgd, adversary.apgd_targeted):
                _set_apgd_iterations(apgd, iterations)
            adversary.fab.n_iter = iterations
        adversary.square.n_queries = int(self.p.square_queries)
        return adversary

    def generate(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        model = self.classifier.model
        model.eval()
        # The seed comes from numpy's global generator, which the evasion threat seeds with the cell's seed before
        # each attack (as for ART's attacks); the reference then reseeds torch's generator, restored afterwards so
        # that what runs after the attack does not depend on it.
        seed = int(np.random.randint(2**31 - 1))
        devices = [self.classifier.device] if self.classifier.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            x_adv, _ = self._adversary(model, seed).run_standard_evaluation(
                torch.from_numpy(x), torch.from_numpy(y).long(), batch_size=int(self.p.batch_size))
        return x_adv.detach().cpu().numpy().astype(np.float32)


def _set_apgd_iterations(apgd, iterations: int) -> None:
    """APGD derives its step-size checkpoints from n_iter when it is built (autopgd_base.APGDAttack.__init__):
    the same fractions of the new count."""
    apgd.n_iter = apgd.n_iter_orig = iterations
    apgd.n_iter_2 = max(int(0.22 * iterations), 1)
    apgd.n_iter_min = max(int(0.06 * iterations), 1)
    apgd.size_decr = max(int(0.03 * iterations), 1)
