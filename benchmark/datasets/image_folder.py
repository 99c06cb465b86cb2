"""Your own images in torchvision's ImageFolder layout (`dataset.root`: `root/<class>/<image>`, or `root/train/...`
and `root/test/...`); class indices follow the sorted class folder names, as in ImageFolder."""
from __future__ import annotations

from typing import Literal

from benchmark.checks import whole
from benchmark.datasets import DATASETS, TEST_SIZE, DatasetConfig
from benchmark.inputs import DataError, folder_root, folder_samples, folder_splits, folder_summary


class ImageFolder(DatasetConfig):
    name: Literal["image_folder"]
    root: str | None = None
    resize: whole(1, 100_000) | None = None  # resize every image to N x N
    test_size: TEST_SIZE | None = None


@DATASETS.register("image_folder", config=ImageFolder, summary=folder_summary, location_key="root")
def load_image_folder(cfg, seed: int):
    """Images convert to the first image's mode (grayscale or RGB)."""
    from benchmark.data import from_arrays, stratified_split

    shape, _ = folder_summary(cfg)
    root = folder_root(cfg)
    splits = [folder_samples(folder)[1] for folder in folder_splits(root)]
    mode = "L" if shape.in_channels == 1 else "RGB"
    arrays = [_read_images(s, mode, shape.image_size, cfg.get("resize") is not None) for s in splits]
    if len(arrays) == 1:
        xtr, xte, ytr, yte = stratified_split(*arrays[0], cfg.test_size, seed)
    else:
        (xtr, ytr), (xte, yte) = arrays
    return from_arrays("image_folder", xtr, ytr, xte, yte, shape.num_classes)


def _read_images(samples, mode: str, size: int, resize: bool):
    import numpy as np
    from PIL import Image

    images = []
    for path, _ in samples:
        with Image.open(path) as image:
            image = image.convert(mode)
            if resize:
                image = image.resize((size, size), Image.Resampling.BILINEAR)
            elif image.size != (size, size):
                raise DataError(f"dataset.root: {path} is {image.size[0]}x{image.size[1]}, the first image "
                                f"{size}x{size}; allowed: one size for all images, or dataset.resize=N")
            images.append(np.asarray(image, dtype=np.uint8))
    x = np.stack(images)
    x = x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2)
    return x.astype(np.float32) / 255.0, np.array([label for _, label in samples], dtype=np.int64)
