"""The reference AutoAttack (Croce & Hein 2020), and its APGD alone, as attacks of this suite.

`pyautoattack` packages fra31/auto-attack: the same APGD, FAB and Square code (docs/threats.md says what differs:
imports, logging, keyword arguments). Its "standard" version runs APGD-CE, APGD-T and FAB-T against the 9 likeliest
other classes and Square with 5,000 queries, each on the images the previous ones left robust; an image counts as
broken as soon as any iterate of any of them fools the model. The wrapper hands it the torch model behind the ART
classifier (inputs in [0, 1] pixel space), the classifier's device, the eps and a seed, and returns numpy like an
ART attack. `max_iter` / `square_queries` below the reference's 100 / 5,000 give a CPU-sized budget of the same
composition (the run's params say which). `ReferenceApgd` runs one of its APGD attacks (CE, DLR or targeted DLR)
on its own, batch by batch.
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

    def generate(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        # The seed comes from numpy's global generator, which the evasion threat seeds with the cell's seed before
        # each attack (as for ART's attacks).
        seed = int(np.random.randint(2**31 - 1))
        x_adv, _ = standard_autoattack(self.classifier.model, torch.from_numpy(x), torch.from_numpy(y).long(),
                                       self.eps, self.norm, self.classifier.nb_classes, self.classifier.device, seed,
                                       int(self.p.max_iter), int(self.p.square_queries), int(self.p.batch_size))
        return x_adv.detach().cpu().numpy().astype(np.float32)


class ReferenceApgd:
    """`generate(x, y)` -> adversarial x: the reference APGD at one eps with `loss` (`ce`, `dlr`, `dlr_targeted`
    against the `targets` likeliest other classes, at most C - 1), `p.max_iter` iterations and `p.random_restarts`
    restarts, on batches of `p.batch_size`. An image it breaks comes back as the first iterate that fooled the
    model, any other as itself."""

    def __init__(self, classifier, eps: float, p, norm: str, loss: str, targets: int = 1):
        self.classifier, self.eps, self.p, self.norm, self.loss, self.targets = classifier, eps, p, norm, loss, targets

    def generate(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        from pyautoattack.autopgd_base import APGDAttack, APGDAttack_targeted

        model, device = self.classifier.model, self.classifier.device
        model.eval()
        common = dict(n_iter=int(self.p.max_iter), norm=_NORM[self.norm], n_restarts=int(self.p.random_restarts),
                      eps=self.eps, seed=int(np.random.randint(2**31 - 1)), device=device)  # seed: as above
        if self.loss == "dlr_targeted":
            targets = min(self.targets, self.classifier.nb_classes - 1)
            apgd = APGDAttack_targeted(model, n_target_classes=targets, **common)
        else:
            apgd = APGDAttack(model, loss=self.loss, **common)
        devices = [device] if torch.device(device).type == "cuda" else []
        batches = []
        with torch.random.fork_rng(devices=devices):  # the reference reseeds torch's generator
            for start in range(0, len(x), int(self.p.batch_size)):
                xb = torch.from_numpy(x[start:start + int(self.p.batch_size)]).to(device)
                yb = torch.from_numpy(y[start:start + int(self.p.batch_size)]).long().to(device)
                batches.append(apgd.perturb(xb, yb).detach().cpu())
        return torch.cat(batches).numpy().astype(np.float32) if batches else x


def standard_autoattack(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, norm: str,
                        num_classes: int, device: torch.device, seed: int, max_iter: int = REFERENCE_ITERATIONS,
                        square_queries: int = REFERENCE_SQUARE_QUERIES, batch_size: int = 250
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """(x_adv, the model's label of each x_adv): the reference's standard evaluation of `model` (eval mode, inputs
    in [0, 1]) at `eps` in `norm` ("linf" | "l2"). An image the reference does not break comes back as itself, so
    it is robust exactly when its returned label is `y`. The reference reseeds torch's generator; it is restored
    afterwards, so that what runs after the attack does not depend on it."""
    from pyautoattack import AutoAttack

    model.eval()
    devices = [device] if torch.device(device).type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        adversary = AutoAttack(model, norm=_NORM[norm], eps=eps, version="standard", seed=seed, device=device)
        # A dataset with fewer than 10 classes has fewer than 9 other classes to target.
        targets = min(adversary.apgd_targeted.n_target_classes, num_classes - 1)
        adversary.apgd_targeted.n_target_classes = adversary.fab.n_target_classes = targets
        if max_iter != REFERENCE_ITERATIONS:
            for apgd in (adversary.apgd, adversary.apgd_targeted):
                _set_apgd_iterations(apgd, max_iter)
            adversary.fab.n_iter = max_iter
        adversary.square.n_queries = square_queries
        return adversary.run_standard_evaluation(x, y, batch_size=batch_size)


def _set_apgd_iterations(apgd, iterations: int) -> None:
    """APGD derives its step-size checkpoints from n_iter when it is built (autopgd_base.APGDAttack.__init__):
    the same fractions of the new count."""
    apgd.n_iter = apgd.n_iter_orig = iterations
    apgd.n_iter_2 = max(int(0.22 * iterations), 1)
    apgd.n_iter_min = max(int(0.06 * iterations), 1)
    apgd.size_decr = max(int(0.03 * iterations), 1)
