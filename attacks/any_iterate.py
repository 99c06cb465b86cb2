"""Which images an evasion attack fools at any point of its run, not only with its final output.

The reference AutoAttack counts an image as broken as soon as any iterate of any restart is misclassified; a PGD
that keeps only its final iterate can step back out of the adversarial region and report the image robust. ART's
PyTorch PGD is kept as the attack; `AnyIteratePGD` records, per image, whether each of its iterates fooled the
model: from the logits of ART's gradient pass at that iterate, and one more forward pass for the last. Other
attacks are judged on their output.

Random starts are drawn per image, not per batch: start r of the image with key k (its position in the cell's test
split) is uniform in the L-inf ball from torch's generator seeded with `start_seed(seed, k, r)`. An image's
starts therefore do not depend on which other images are attacked with it, and `make verify` can start its own
PGD from the same points.
"""
from __future__ import annotations

import hashlib

import numpy as np
import torch
from art.attacks.evasion import ProjectedGradientDescent
from art.attacks.evasion.projected_gradient_descent.projected_gradient_descent_pytorch import (
    ProjectedGradientDescentPyTorch,
)


def start_seed(seed: int, key: int, restart: int) -> int:
    """The seed of random start `restart` of the image `key` in a cell of seed `seed`: the first 4 bytes of the
    sha256 of "seed:key:restart" (torch's CPU generator keeps 32 bits of a seed)."""
    return int.from_bytes(hashlib.sha256(f"{int(seed)}:{int(key)}:{int(restart)}".encode()).digest()[:4], "big")


def random_starts(x: torch.Tensor, keys, eps: float, seed: int, restart: int) -> torch.Tensor:
    """Per image of `x`: a point drawn uniformly in the L-inf ball of radius `eps` around it, clipped to [0, 1]."""
    noise = torch.stack([torch.rand(x.shape[1:], generator=torch.Generator().manual_seed(start_seed(seed, k, restart)))
                         for k in keys])
    return (x + (noise * 2 - 1).to(x.device, x.dtype) * eps).clamp(0, 1)


class AnyIteratePGD(ProjectedGradientDescentPyTorch):
    """ART's PyTorch PGD that records, per image of the last `generate`, whether any iterate of any random start
    was misclassified (`fooled`), with L-inf random starts drawn per image (`random_starts`). Untargeted:
    "misclassified" means not the label passed as `y`."""

    fooled: np.ndarray

    @classmethod
    def like(cls, attack: ProjectedGradientDescent) -> "AnyIteratePGD":
        """The same PGD (estimator, norm, budget, starts, batch size) as ART's framework-agnostic `attack`."""
        return cls(attack.estimator, norm=attack.norm, eps=attack.eps, eps_step=attack.eps_step,
                   max_iter=attack.max_iter, targeted=attack.targeted, num_random_init=attack.num_random_init,
                   batch_size=attack.batch_size, random_eps=attack.random_eps, verbose=False)

    def generate(self, x: np.ndarray, y: np.ndarray | None = None, keys=None, seed: int = 0, **kwargs) -> np.ndarray:
        """`keys`: per image, the key of its random starts (default: its position in `x`); `seed`: the cell's."""
        if y is None or self.targeted:
            raise ValueError("AnyIteratePGD judges iterates against the true labels: untargeted, with y given")
        self.fooled = np.zeros(len(x), dtype=bool)
        self._labels = torch.as_tensor(np.asarray(y).reshape(len(x), -1).argmax(1) if np.ndim(y) > 1 else y)
        self._keys = np.arange(len(x)) if keys is None else np.asarray(keys)
        self._seed, self._batch_restart = seed, (-1, -1)
        return super().generate(x, y, **kwargs)

    def _generate_batch(self, x, targets, mask, eps, eps_step):
        """One start of one batch (ART calls it once per random start); counts the starts of the batch."""
        batch, restart = self._batch_restart
        self._batch_restart = (self._batch_id, restart + 1 if batch == self._batch_id else 0)
        return super()._generate_batch(x, targets, mask, eps, eps_step)

    def _compute_pytorch(self, x, x_init, y, mask, eps, eps_step, random_init, momentum):
        """One PGD step (ART's, from this image's own random start on the first step), and the model's verdict on
        the iterate it started from: the logits of ART's gradient pass at that iterate are the model's output there,
        so judging it costs nothing. The last step's output is judged with one more forward pass."""
        start = self._batch_id * self.batch_size
        if random_init and self.norm in (np.inf, "inf") and mask is None and np.ndim(eps) == 0:
            x = random_starts(x_init, self._keys[start:start + len(x)], float(eps), self._seed,
                              self._batch_restart[1])
            random_init = False
        logits: list[torch.Tensor] = []
        # ART's wrapper of the model returns its layers' outputs, the logits last (ART reads them so)
        hook = self.estimator._model.register_forward_hook(lambda _module, _inputs, out: logits.append(out[-1].detach()))
        try:
            x_adv = super()._compute_pytorch(x, x_init, y, mask, eps, eps_step, random_init, momentum)
        finally:
            hook.remove()
        if self._i_max_iter > 0:  # x is the previous step's output (at step 0 it is the start, not an iterate)
            self._judge(logits[-1], start)
        if self._i_max_iter == self.max_iter - 1:
            with torch.no_grad():
                self._judge(self.estimator.model(x_adv), start)
        return x_adv

    def _judge(self, logits: torch.Tensor, start: int) -> None:
        labels = self._labels[start:start + len(logits)]
        self.fooled[start:start + len(logits)] |= (logits.argmax(1).cpu() != labels).numpy()


def fooled_at_any_point(attack, classifier, x: np.ndarray, y: np.ndarray, batch_size: int, keys=None,
                        seed: int = 0) -> np.ndarray:
    """Per image: the attack fooled the model with some point it tried (every PGD iterate of every start, the
    starts keyed by `keys` and `seed`; for other attacks, their output). `y`: the true labels."""
    if isinstance(attack, ProjectedGradientDescent):
        pgd = AnyIteratePGD.like(attack)
        pgd.generate(x=x, y=y, keys=keys, seed=seed)  # its output is the last iterate of some start, already judged
        return pgd.fooled
    x_adv = attack.generate(x=x, y=y)
    return classifier.predict(x_adv, batch_size=batch_size).argmax(1) != y
