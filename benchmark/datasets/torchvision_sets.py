"""torchvision's MNIST, Fashion-MNIST, CIFAR-10 and SVHN, read from `data_root` (downloaded only with
`download: true`); their fixed train/test splits, optionally subsampled (`n_train`, `n_test`: seeded, stratified)."""
from __future__ import annotations

from typing import Literal

from benchmark.checks import COUNT
from benchmark.datasets import DATASETS, DatasetConfig


class TorchvisionDataset(DatasetConfig):
    name: Literal["mnist", "fashion_mnist", "cifar10", "svhn"]
    data_root: str | None = None
    download: bool = False
    n_train: COUNT | None = None
    n_test: COUNT | None = None


def load_torchvision(cfg, seed: int):
    from benchmark.data import load_torchvision_split

    return load_torchvision_split(cfg, seed)


# torchvision's file layout under data_root (what its `_check_exists` looks for), checked without importing it;
# tests/test_validation.py checks the names against torchvision's own lists.
_MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
for name, shape, sizes, files in (
    ("mnist", (1, 28, 10), (60000, 10000), tuple(f"MNIST/raw/{f}" for f in _MNIST_FILES)),
    ("fashion_mnist", (1, 28, 10), (60000, 10000), tuple(f"FashionMNIST/raw/{f}" for f in _MNIST_FILES)),
    ("cifar10", (3, 32, 10), (50000, 10000), tuple(f"cifar-10-batches-py/{f}" for f in (
        "data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"))),
    ("svhn", (3, 32, 10), (73257, 26032), ("train_32x32.mat", "test_32x32.mat")),
):
    DATASETS.register(name, config=TorchvisionDataset, shape=shape, sizes=sizes, files=files)(load_torchvision)
