"""Datasets: `dataset.name` -> a loader(cfg, seed) -> benchmark.data.Dataset, registered by its module.

A dataset is one module in benchmark/datasets/ (discovered, not listed) plus conf/dataset/<name>.yaml. The module
declares its config model (a `DatasetConfig` with its own keys) and registers its loader with
`@DATASETS.register(name, config=..., shape=..., sizes=...)`; the metadata says what can be known without loading
it. Dataset modules import torch inside their loaders, so that the config checks stay torch-free.
"""
from __future__ import annotations

from benchmark.checks import UNIT, Group, number, whole
from benchmark.registry import Registry

DATASETS = Registry("dataset.name", "benchmark.datasets", metadata={
    # (in_channels, image side, classes) the loader produces; the config must state the same (checked before
    # compute); the side is None where the loader resizes to `dataset.image_size`. None: read from the files.
    "shape": None,
    # images before the split: (all,) for a dataset split here by `test_size`, (train, test) for fixed splits
    # (before `n_train` / `n_test` subsampling). None: read from the files.
    "sizes": None,
    "files": (),  # files the loader needs under `dataset.data_root` (checked unless `dataset.download`)
    # a dataset a package ships: (package, path inside it) of the file the loader reads; its sha256 enters cache keys
    "package_file": None,
    "summary": None,  # your own data: cfg -> (DataShape, sizes) read from the files' headers (benchmark/inputs.py)
    "location_key": None,  # your own data: the key naming the files, replaced by their sha256 in cache keys
}, plugins="prunesec.datasets")


class DatasetConfig(Group):
    """Keys every dataset has; a dataset's config model adds its own and a `name: Literal[name]` field."""
    # Declared by the built-in datasets; read from the files for your own data (benchmark.inputs.dataset_shape).
    in_channels: whole(1, 4096) | None = None
    image_size: whole(1, 100_000) | None = None
    num_classes: whole(2, 100_000) | None = None
    eps: list[UNIT]  # L-inf budgets of the evasion threats (pixels in [0, 1])
    eps_l2: list[number(0.0, 1000.0)] = []


TEST_SIZE = number(0.0, 1.0, low_open=True, high_open=True)  # the held-out share of a dataset split here

__all__ = ["DATASETS", "DatasetConfig", "TEST_SIZE"]
