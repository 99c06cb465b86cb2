"""make perf's PGD comparison: its set-up runs, and our ART wrapper's PGD equals the plain torch loop's."""
from __future__ import annotations

import numpy as np
import torch

from benchmark.tools.perf import pgd_setup, torch_pgd, wrapper_pgd


def test_the_wrapper_and_the_plain_torch_pgd_give_the_same_adversarial_images():
    torch.set_num_threads(1)
    model, x, y, params = pgd_setup(40)
    ours, plain = wrapper_pgd(model, x, y, 0.1, params), torch_pgd(model, x, y, 0.1, params)
    assert ours.shape == tuple(x.shape)
    assert np.abs(ours - plain).max() <= 1e-6
    assert np.abs(ours - x.numpy()).max() > 0.05  # the attack moved the images
