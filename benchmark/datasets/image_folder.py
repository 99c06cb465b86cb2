"""Your own images in torchvision's ImageFolder layout (`dataset.root`: `root/<class>/<image>`, or `root/train/...`
and `root/test/...`); class indices follow the sorted class folder names, as in ImageFolder."""
from __future__ import annotations

from typing import Literal

from benchmark.checks import whole
from benchmark.datasets import DATASETS, TEST_SIZE, DatasetConfig
from benchmark.inputs import folder_summary


class ImageFolder(DatasetConfig):
    name: Literal["image_folder"]
    root: str | None = None
    resize: whole(1, 100_000) | None = None  # resize every image to N x N
    test_size: TEST_SIZE | None = None


@DATASETS.register("image_folder", config=ImageFolder, summary=folder_summary, location_key="root")
def load_image_folder(cfg, seed: int):
    from benchmark.data import load_image_folder_arrays

    return load_image_folder_arrays(cfg, seed)
