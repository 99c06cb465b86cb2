"""Which images an evasion attack fools at any point of its run, not only with its final output.

The reference AutoAttack counts an image as broken as soon as any iterate of any restart is misclassified; a PGD
that keeps only its final iterate can step back out of the adversarial region and report the image robust. ART's
PyTorch PGD is kept as the attack; `AnyIteratePGD` adds one forward pass after each of its steps and records, per
image, whether that iterate fooled the model. Other attacks are judged on their output.
"""
from __future__ import annotations

import numpy as np
import torch
from art.attacks.evasion import ProjectedGradientDescent
from art.attacks.evasion.projected_gradient_descent.projected_gradient_descent_pytorch import (
    ProjectedGradientDescentPyTorch,
)


class AnyIteratePGD(ProjectedGradientDescentPyTorch):
    """ART's PyTorch PGD that records, per image of the last `generate`, whether any iterate of any random start
    was misclassified (`fooled`). Untargeted: "misclassified" means not the label passed as `y`."""

    fooled: np.ndarray

    @classmethod
    def like(cls, attack: ProjectedGradientDescent) -> "AnyIteratePGD":
        """The same PGD (estimator, norm, budget, starts, batch size) as ART's framework-agnostic `attack`."""
        return cls(attack.estimator, norm=attack.norm, eps=attack.eps, eps_step=attack.eps_step,
                   max_iter=attack.max_iter, targeted=attack.targeted, num_random_init=attack.num_random_init,
                   batch_size=attack.batch_size, random_eps=attack.random_eps, verbose=False)

    def generate(self, x: np.ndarray, y: np.ndarray | None = None, **kwargs) -> np.ndarray:
        if y is None or self.targeted:
            raise ValueError("AnyIteratePGD judges iterates against the true labels: untargeted, with y given")
        self.fooled = np.zeros(len(x), dtype=bool)
        self._labels = torch.as_tensor(np.asarray(y).reshape(len(x), -1).argmax(1) if np.ndim(y) > 1 else y)
        return super().generate(x, y, **kwargs)

    def _compute_pytorch(self, x, x_init, y, mask, eps, eps_step, random_init, momentum):
        """One PGD step (ART's), then the model's verdict on the new iterate for the images of this batch."""
        x_adv = super()._compute_pytorch(x, x_init, y, mask, eps, eps_step, random_init, momentum)
        start = self._batch_id * self.batch_size
        with torch.no_grad():
            predicted = self.estimator.model(x_adv).argmax(1).cpu()
        labels = self._labels[start:start + len(x_adv)]
        self.fooled[start:start + len(x_adv)] |= (predicted != labels).numpy()
        return x_adv


def fooled_at_any_point(attack, classifier, x: np.ndarray, y: np.ndarray, batch_size: int) -> np.ndarray:
    """Per image: the attack fooled the model with some point it tried (every PGD iterate of every start; for other
    attacks, their output). Images are the attack's input; `y` their true labels."""
    if isinstance(attack, ProjectedGradientDescent):
        pgd = AnyIteratePGD.like(attack)
        pgd.generate(x=x, y=y)  # its output is the last iterate of some start, already judged
        return pgd.fooled
    x_adv = attack.generate(x=x, y=y)
    return classifier.predict(x_adv, batch_size=batch_size).argmax(1) != y
