"""Loading data: every dataset becomes in-memory float tensors in [0, 1], NCHW, with a seeded split.

The datasets themselves are registered in benchmark/datasets/ (one module each); this module holds what their
loaders share: the `Dataset` they return, `from_arrays`, the seeded stratified split and subsets (`eval_subset`:
the test images a cell's threat is measured on), the defender split (`hold_out_defender`: training images no
training stage sees, for the defences' choices) and the per-process memos of loaded datasets (`load_dataset`)
and of a cell's data (`cell_data`). The readers of torchvision's, npz and image-folder files are in their dataset
modules. What can be known without loading anything (shapes, split sizes, the defender split's size, the content
sha256 of your own data) is in benchmark/inputs.py.
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
    # The defender split (`hold_out_defender`): clean training images no training stage sees; None until held out.
    x_defender: torch.Tensor | None = None
    y_defender: torch.Tensor | None = None

    @property
    def in_channels(self) -> int:
        return self.x_train.shape[1]

    @property
    def image_size(self) -> int:
        return self.x_train.shape[-1]

    def replace(self, **changes) -> "Dataset":
        return dataclasses.replace(self, **changes)

    def defender(self) -> "Dataset":
        """The defender split as a training set: its images in the training role, the test split unchanged."""
        if self.x_defender is None:
            raise ValueError(f"dataset {self.name!r} has no defender split (benchmark.data.hold_out_defender)")
        return self.replace(x_train=self.x_defender, y_train=self.y_defender)


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


DEFENDER_STREAM = 7919  # offsets the seed of the defender permutation from the other seeded subsets of a cell


def defender_indices(n_train: int, count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(kept, held out): indices into the loader's training split of the images that stay in training, in their
    order, and of the `count` seeded images of the defender split. Disjoint, and together every index once."""
    held = seeded_indices(n_train, count, seed + DEFENDER_STREAM)
    kept = torch.ones(n_train, dtype=torch.bool)
    kept[held] = False
    return torch.nonzero(kept).flatten(), held


def hold_out_defender(data: Dataset, count: int, seed: int) -> Dataset:
    """`data` with `count` seeded training images moved to the defender split (benchmark.data.defender_indices)."""
    kept, held = defender_indices(len(data.y_train), count, seed)
    return data.replace(x_train=data.x_train[kept], y_train=data.y_train[kept], x_defender=data.x_train[held],
                        y_defender=data.y_train[held])


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


def _frozen(cfg) -> tuple:
    from omegaconf import OmegaConf

    if cfg.name not in DATASETS:
        raise ValueError(f"dataset.name={cfg.name!r} is unknown; allowed: {DATASETS.names()}")
    plain = OmegaConf.to_container(cfg, resolve=True)
    return tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in plain.items()))


def load_dataset(cfg, seed: int) -> Dataset:
    """Load (and, within one process, memoise) the dataset described by the `dataset` config group."""
    return _load_cached(cfg.name, _frozen(cfg), seed)


@functools.lru_cache(maxsize=8)
def _cell_data_cached(name: str, frozen_cfg: tuple, seed: int, defender_size) -> Dataset:
    from benchmark.inputs import defender_count

    data = _load_cached(name, frozen_cfg, seed)
    return hold_out_defender(data, defender_count(len(data.y_train), defender_size), seed)


def cell_data(cfg) -> Dataset:
    """A cell's data (memoised within one process, so that the cells of a worker share one object): the dataset of
    `cfg.dataset` with `cfg.data.defender_size` training images (benchmark.inputs.defender_count) held out as the
    defender split, seeded by `cfg.seed`."""
    return _cell_data_cached(cfg.dataset.name, _frozen(cfg.dataset), int(cfg.seed), cfg.data.defender_size)
