"""Loading data: every dataset becomes in-memory float tensors in [0, 1], NCHW, with a seeded split.

The datasets themselves are registered in benchmark/datasets/ (one module each); this module holds what their
loaders share: the `Dataset` they return, `from_arrays`, the seeded stratified split and subsets (`eval_subset`:
the test images a cell's threat is measured on), and the per-process memo of loaded datasets (`load_dataset`). The
readers of torchvision's, npz and image-folder files are in their dataset modules. What can be known without
loading anything (shapes, split sizes, the content sha256 of your own data) is in benchmark/inputs.py.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.model_selection import train_test_split

from benchmark.datasets import DATASETS
from benchmark.inputs import DataError


class DatasetUnavailable(RuntimeError):
    """The dataset's files are not on disk and could not be downloaded (benchmark/datasets/torchvision_sets.py)."""


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


def eval_subset(data: Dataset, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed, seeded subset of the test set on which every attack and threat metric of a cell is measured.

    A smaller size gives a prefix of the same permutation, so per-attack subsets are nested."""
    idx = seeded_indices(len(data.y_test), size, seed)
    return data.x_test[idx], data.y_test[idx]


def image_ids(x: torch.Tensor) -> list[str]:
    """Per image, an identity that holds across seeds and splits: the first 8 bytes (16 hex digits) of the sha1 of
    its float32 pixels as the loader returns them. The seeded splits move images, never change them, so one image
    has one id in every seed's test split; identical images share an id."""
    pixels = x.detach().to("cpu", torch.float32).contiguous().numpy()
    return [hashlib.sha1(image.tobytes()).hexdigest()[:16] for image in pixels]


def stratified_split(x: np.ndarray, y: np.ndarray, test_size: float, seed: int):
    # mnist5k's labels are sorted (500 zeros, then ones, ...): a plain head/tail split would be useless.
    return train_test_split(x, y, test_size=test_size, random_state=seed, stratify=y)


def from_arrays(name, x_train, y_train, x_test, y_test, num_classes: int) -> Dataset:
    """A Dataset from NCHW float images in [0, 1] and integer labels; `num_classes` is what the dataset declares
    (its registry entry, or its files): a label outside 0..num_classes-1 is an error, not a silent new class."""
    as_x = lambda a: torch.as_tensor(np.ascontiguousarray(a), dtype=torch.float32)  # noqa: E731
    as_y = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.int64)  # noqa: E731
    top = int(max(np.max(y_train), np.max(y_test)))
    if top >= num_classes or min(np.min(y_train), np.min(y_test)) < 0:
        raise DataError(f"dataset.name={name!r}: labels run up to {top}; allowed: 0..{num_classes - 1} "
                        f"(dataset.num_classes={num_classes})")
    return Dataset(name, as_x(x_train), as_y(y_train), as_x(x_test), as_y(y_test), int(num_classes))


@functools.lru_cache(maxsize=8)
def _load_cached(name: str, frozen_cfg: tuple, seed: int) -> Dataset:
    from omegaconf import OmegaConf

    return DATASETS[name].target(OmegaConf.create(dict(frozen_cfg)), seed)


def load_dataset(cfg, seed: int) -> Dataset:
    """Load (and, within one process, memoise) the dataset described by the `dataset` config group."""
    from omegaconf import OmegaConf

    if cfg.name not in DATASETS:
        raise ValueError(f"dataset.name={cfg.name!r} is unknown; allowed: {DATASETS.names()}")
    plain = OmegaConf.to_container(cfg, resolve=True)
    frozen = tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in plain.items()))
    return _load_cached(cfg.name, frozen, seed)
