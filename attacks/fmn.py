"""Fast Minimum-Norm attack (Pintor et al., NeurIPS 2021) from `secml-torch`, as a minimal-perturbation attack.

FMN looks for each image's smallest adversarial perturbation in one norm (L-inf or L2): normalized gradient steps
inside an eps-ball whose radius shrinks while the point is adversarial and grows while it is not, both step sizes
cosine-annealed. One run gives robust accuracy at every eps at once (the evasion threat reads it off at its eps
list, `minimal` role), and the per-image norms give the whole security curve. docs/threats.md says why
secml-torch's implementation and how it differs from the authors' reference.
"""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset


class FastMinimumNorm:
    """`generate(x, y)` -> per image the smallest adversarial FMN found (the clean image where it found none)."""

    def __init__(self, classifier, p, norm: str):
        self.classifier, self.p, self.norm = classifier, p, norm

    def generate(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        from secmlt.adv.backends import Backends
        from secmlt.adv.evasion.fmn import FMN

        attack = FMN(perturbation_model=self.norm, num_steps=int(self.p.max_iter), step_size=float(self.p.step_size),
                     gamma=float(self.p.gamma), lb=0.0, ub=1.0, backend=Backends.NATIVE)
        model = self.classifier.model
        model.eval()
        loader = DataLoader(TensorDataset(torch.from_numpy(x), torch.from_numpy(y).long()),
                            batch_size=int(self.p.batch_size))
        x_adv = torch.cat([batch for batch, _ in attack(model, loader)])
        return x_adv.detach().cpu().numpy().astype(np.float32)


def security_curve_figure(name: str, radii: np.ndarray, eps_marks: list[float]):
    """Robust accuracy against the budget from one minimal-perturbation attack: image i is robust at every eps
    below radii[i] (0: misclassified clean; inf: never broken). Dots mark the eps the cell logs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    finite = radii[np.isfinite(radii)]
    top = 1.1 * max(float(finite.max()) if len(finite) else 0.0, max(eps_marks, default=0.0)) or 1.0
    grid = np.linspace(0.0, top, 200)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    line = ax.plot(grid, [(radii > e).mean() for e in grid], label=name)[0]
    ax.plot(eps_marks, [(radii > e).mean() for e in eps_marks], "o", color=line.get_color())
    ax.set_xlabel("perturbation budget (norm of the attack)")
    ax.set_ylabel("robust accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.legend()
    fig.tight_layout()
    plt.close(fig)  # logged by the cell with mlflow.log_figure; not shown
    return fig
