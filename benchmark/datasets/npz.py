"""Your own data as a NumPy archive (`dataset.path`): `x_train, y_train, x_test, y_test`, or `x, y` split here
(seeded, stratified, `test_size`). Shapes, classes and sizes are read from the archive's headers and labels."""
from __future__ import annotations

from typing import Literal

from benchmark.datasets import DATASETS, TEST_SIZE, DatasetConfig
from benchmark.inputs import NPZ_WHOLE_KEYS, image_axes, npz_headers, npz_layout, npz_path, npz_summary


class Npz(DatasetConfig):
    name: Literal["npz"]
    path: str | None = None
    layout: Literal["auto", "nchw", "nhwc"] = "auto"  # where a 4-d x keeps its channels
    test_size: TEST_SIZE | None = None


@DATASETS.register("npz", config=Npz, summary=npz_summary, location_key="path")
def load_npz(cfg, seed: int):
    """`x_train, y_train, x_test, y_test`, or `x, y` split here (seeded, stratified, `test_size`)."""
    import numpy as np

    from benchmark.data import from_arrays, stratified_split

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


def _to_nchw_unit(x, layout: str):
    """NCHW float32 in [0, 1] (benchmark.inputs.npz_summary has checked that float pixels lie there)."""
    import numpy as np

    if layout == "nhw":
        x = x[:, None]
    elif layout == "nhwc":
        x = x.transpose(0, 3, 1, 2)
    return x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32)
