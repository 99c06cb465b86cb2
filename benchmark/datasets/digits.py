"""scikit-learn's 8x8 digits (1,797 images, offline), upsampled to `image_size` so that the seed CNN's conv/pool
stack fits, split here (seeded, stratified)."""
from __future__ import annotations

from typing import Literal

from benchmark.datasets import DATASETS, TEST_SIZE, DatasetConfig


class Digits(DatasetConfig):
    name: Literal["digits"]
    test_size: TEST_SIZE


@DATASETS.register("digits", config=Digits, shape=(1, None, 10), sizes=(1797,),
                   package_file=("sklearn", "datasets/data/digits.csv.gz"))
def load_digits(cfg, seed: int):
    import numpy as np
    import torch
    import torch.nn.functional as F
    from sklearn.datasets import load_digits as sk_digits

    from benchmark.data import from_arrays, stratified_split

    bunch = sk_digits()
    x = (bunch.data / 16.0).reshape(-1, 1, 8, 8).astype(np.float32)
    if cfg.image_size != 8:
        x = F.interpolate(torch.from_numpy(x), size=cfg.image_size, mode="bilinear", align_corners=False).numpy()
    xtr, xte, ytr, yte = stratified_split(x, bunch.target, cfg.test_size, seed)
    return from_arrays("digits", xtr, ytr, xte, yte, cfg.num_classes)
