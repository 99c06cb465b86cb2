"""Loading data: every dataset becomes in-memory float tensors in [0, 1], NCHW, with a seeded split.

The datasets themselves are registered in benchmark/datasets/ (one module each); this module holds what their
loaders share: the `Dataset` they return, `from_arrays`, the seeded stratified split and subsets, the torchvision,
npz and image-folder readers, and the per-process memo of loaded datasets (`load_dataset`). torchvision datasets
load from `data_root`; when their files are missing and `download=false` (or there is no network) the error says
where we looked and what to run. What can be known without loading anything (shapes, split sizes, the content
sha256 of your own data) is in benchmark/inputs.py.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn.model_selection import train_test_split

from benchmark.datasets import DATASETS
from benchmark.inputs import (NPZ_WHOLE_KEYS, DataError, folder_root, folder_samples, folder_splits, folder_summary,
                              image_axes, npz_headers, npz_layout, npz_path, npz_summary)


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


def load_torchvision_split(cfg, seed: int) -> Dataset:
    """A torchvision dataset's fixed splits from `cfg.data_root`, subsampled to `n_train` / `n_test`."""
    root = Path(cfg.data_root).expanduser().resolve()
    train = _torchvision_split(cfg.name, root, True, cfg.download)
    test = _torchvision_split(cfg.name, root, False, cfg.download)
    xtr, ytr = _subsample(*_as_numpy_images(train), cfg.get("n_train"), seed)
    xte, yte = _subsample(*_as_numpy_images(test), cfg.get("n_test"), seed)
    return from_arrays(cfg.name, xtr, ytr, xte, yte, cfg.num_classes)


# --- Your own data: npz archives and image folders -------------------------------------------------------------

def _to_nchw_unit(x: np.ndarray, layout: str) -> np.ndarray:
    """NCHW float32 in [0, 1] (npz_summary has checked that float pixels lie there)."""
    if layout == "nhw":
        x = x[:, None]
    elif layout == "nhwc":
        x = x.transpose(0, 3, 1, 2)
    return x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32)


def load_npz_arrays(cfg, seed: int) -> Dataset:
    """`x_train, y_train, x_test, y_test`, or `x, y` split here (seeded, stratified, `test_size`)."""
    shape, _ = npz_summary(cfg)
    path = npz_path(cfg)
    keys = npz_layout(cfg, npz_headers(path))
    with np.load(path, allow_pickle=False) as archive:
        arrays = {k: archive[k] for k in keys}
    xs = {k: _to_nchw_unit(arrays[k], image_axes(cfg, k, arrays[k].shape)[0]) for k in keys[0::2]}
    if keys == NPZ_WHOLE_KEYS:
        xtr, xte, ytr, yte = stratified_split(xs["x"], arrays["y"], cfg.test_size, seed)
    else:
        xtr, ytr, xte, yte = xs["x_train"], arrays["y_train"], xs["x_test"], arrays["y_test"]
    return from_arrays("npz", xtr, ytr, xte, yte, shape.num_classes)


def _read_images(samples, mode: str, size: int, resize: bool) -> tuple[np.ndarray, np.ndarray]:
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


def load_image_folder_arrays(cfg, seed: int) -> Dataset:
    """torchvision's ImageFolder layout (`root/<class>/<image>`, or `root/train/<class>/...` and `root/test/...`);
    class indices follow the sorted class folder names, as in ImageFolder. Images convert to the first image's
    mode (grayscale or RGB)."""
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
