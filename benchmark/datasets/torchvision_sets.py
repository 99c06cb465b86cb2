"""torchvision's MNIST, Fashion-MNIST, CIFAR-10 and SVHN, read from `data_root` (downloaded only with
`download: true`); their fixed train/test splits, optionally subsampled (`n_train`, `n_test`: seeded, stratified).
When the files are missing and `download=false` (or there is no network) the error says where we looked and what
to run."""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from benchmark.checks import COUNT
from benchmark.datasets import DATASETS, DatasetConfig


class TorchvisionDataset(DatasetConfig):
    name: Literal["mnist", "fashion_mnist", "cifar10", "svhn"]
    data_root: str | None = None
    download: bool = False
    n_train: COUNT | None = None
    n_test: COUNT | None = None


_CLASSES = {  # name -> (torchvision class name, how it takes the split argument)
    "mnist": ("MNIST", "train"),
    "fashion_mnist": ("FashionMNIST", "train"),
    "cifar10": ("CIFAR10", "train"),
    "svhn": ("SVHN", "split"),
}


def load_torchvision(cfg, seed: int):
    """The fixed splits from `cfg.data_root`, subsampled to `n_train` / `n_test`."""
    from benchmark.data import from_arrays

    root = Path(cfg.data_root).expanduser().resolve()
    train = _split(cfg.name, root, True, cfg.download)
    test = _split(cfg.name, root, False, cfg.download)
    xtr, ytr = _subsample(*_as_numpy_images(train), cfg.get("n_train"), seed)
    xte, yte = _subsample(*_as_numpy_images(test), cfg.get("n_test"), seed)
    return from_arrays(cfg.name, xtr, ytr, xte, yte, cfg.num_classes)


def _split(name: str, root: Path, train: bool, download: bool):
    import torchvision

    from benchmark.data import DatasetUnavailable

    cls_name, split_kind = _CLASSES[name]
    cls = getattr(torchvision.datasets, cls_name)
    split_arg = {"train": train} if split_kind == "train" else {"split": "train" if train else "test"}
    try:
        return cls(root=str(root), download=download, **split_arg)
    except (RuntimeError, OSError) as err:  # torchvision: "Dataset not found ..."; URLError when offline
        split_text = "train=True" if split_kind == "train" else "split='train'"
        fetch = f"python -c \"import torchvision; torchvision.datasets.{cls_name}(root='{root}', {split_text}, download=True)\""
        raise DatasetUnavailable(
            f"dataset {name!r}: files not found under data_root={str(root)!r}"
            f"{' and the download failed (no network?)' if download else ' (download=false)'}.\n"
            f"Fetch them on a machine with network access with:\n  {fetch}\n"
            f"(and the same with the test split), or run with dataset.download=true, "
            f"or point dataset.data_root at a folder that has them. Cause: {err}"
        ) from None


def _as_numpy_images(ds):
    import numpy as np
    import torch

    data = ds.data.numpy() if isinstance(ds.data, torch.Tensor) else np.asarray(ds.data)
    labels = getattr(ds, "targets", None)
    labels = getattr(ds, "labels") if labels is None else labels
    labels = labels.numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    if data.ndim == 3:  # N x H x W (MNIST-like)
        data = data[:, None]
    elif data.shape[-1] == 3:  # N x H x W x C (CIFAR) -> NCHW; SVHN is already NCHW
        data = data.transpose(0, 3, 1, 2)
    return data.astype(np.float32) / 255.0, labels


def _subsample(x, y, n: int | None, seed: int):
    import numpy as np
    from sklearn.model_selection import train_test_split

    if not n or n >= len(y):
        return x, y
    keep, _ = train_test_split(np.arange(len(y)), train_size=n, random_state=seed, stratify=y)
    return x[np.sort(keep)], y[np.sort(keep)]


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
