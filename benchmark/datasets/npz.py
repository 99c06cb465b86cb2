"""Your own data as a NumPy archive (`dataset.path`): `x_train, y_train, x_test, y_test`, or `x, y` split here
(seeded, stratified, `test_size`). Shapes, classes and sizes are read from the archive's headers and labels."""
from __future__ import annotations

from typing import Literal

from benchmark.datasets import DATASETS, TEST_SIZE, DatasetConfig
from benchmark.inputs import npz_summary


class Npz(DatasetConfig):
    name: Literal["npz"]
    path: str | None = None
    layout: Literal["auto", "nchw", "nhwc"] = "auto"  # where a 4-d x keeps its channels
    test_size: TEST_SIZE | None = None


@DATASETS.register("npz", config=Npz, summary=npz_summary, location_key="path")
def load_npz(cfg, seed: int):
    from benchmark.data import load_npz_arrays

    return load_npz_arrays(cfg, seed)
