"""Property: whatever the overrides, a cell is either rejected before any compute (exit code 2, one line, the store
untouched) or it finishes. Never a traceback, never a FAILED run for a config mistake.

Hypothesis draws a config group option per group and a few mutations of the composed config: any key set to a
value of another type or out of its range (whole numbers, fractions, negatives, NaN, infinities, strings,
booleans, null, lists, empty lists), keys deleted, unknown keys added. Most examples go through the in-process path
(`compose`, then `run_cell` on a cheap base cell); a few run `python -m benchmark.run` to pin the end-to-end
contract. Two more properties draw what a user points the suite at: tracking URIs of every scheme MLflow knows
(with credentials, closed ports, unknown hosts), and npz archives of odd shapes, dtypes, pixel values and label sets.
"""
from __future__ import annotations

import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from omegaconf import DictConfig, ListConfig, OmegaConf

from benchmark.validate import ConfigError, check_config

from conftest import ROOT, cli_env, make_cfg

# A cell that costs about a second when it runs: LeNet-300-100 on digits, 1 epoch, FGSM on 20 images.
BASE = ["model=lenet300", "train.epochs=1", "finetune.epochs=0", "threat.subset=20", "eval=fast"]
OPTIONS = {  # options whose cells stay cheap (offline datasets; evasion threats: no proxy models to train)
    "dataset": ["digits", "mnist5k", "cifar10"],  # cifar10: its files are not here, so it must be rejected
    "pruning": sorted(p.stem for p in (ROOT / "conf" / "pruning").glob("*.yaml")),
    "threat": ["fgsm", "pgd"],
}
# Values as Hydra reads them from the command line: every type, in and out of every range.
VALUES = ["0", "1", "2", "-1", "0.0", "0.5", "1.5", "2.0", "1e-3", "abc", "true", "false", "null", "[]", "[0.1]",
          "[1,2]", "'1'", "{}", "nan", "inf", "-inf", "[nan]", "[0.1,inf]"]
# Keys that only make a valid cell slow (they are checked like every other key, but not drawn here).
SLOW = {"train.epochs", "finetune.epochs", "seed", "eval.latency.repeats", "eval.corruptions.enabled",
        "eval.interpret.enabled", "pruning.rounds", "pruning.steps", "device", "force", "results_dir",
        "tracking_uri", "experiment_name", "dataset.data_root", "dataset.download"}


def _leaves(node, prefix: str = "") -> list[str]:
    """Every key of the composed config, lists indexed like Hydra's overrides (threat.attacks.0.name)."""
    children = node.keys() if isinstance(node, DictConfig) else range(len(node)) if isinstance(node, ListConfig) else []
    keys = []
    for key in children:
        path = f"{prefix}{key}"
        keys.append(path)
        if not OmegaConf.is_interpolation(node, key) and isinstance(node[key], (DictConfig, ListConfig)):
            keys += _leaves(node[key], path + ".")
    return keys


@st.composite
def overrides(draw) -> list[str]:
    chosen = [f"{group}={draw(st.sampled_from(options))}" for group, options in OPTIONS.items()]
    keys = [k for k in _leaves(make_cfg("unused", *BASE, *chosen)) if k not in SLOW]
    mutations = []
    for _ in range(draw(st.integers(0, 3))):
        key = draw(st.sampled_from(keys))
        kind = draw(st.sampled_from(["set", "set", "set", "delete", "add"]))
        if kind == "set":
            mutations.append(f"{key}={draw(st.sampled_from(VALUES))}")
        elif kind == "delete":
            mutations.append(f"~{key}")
        else:
            group = key.rsplit(".", 1)[0] if "." in key else ""
            mutations.append(f"+{group + '.' if group else ''}unknown_key={draw(st.sampled_from(VALUES))}")
    return [*chosen, *mutations]


def _compose(results: Path, extra: list[str]):
    try:
        return make_cfg(results, *BASE, *extra)
    except Exception:  # noqa: BLE001 - Hydra refused to compose: `benchmark.run` reports it in one line, exit code 2
        return None


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(extra=overrides())
def test_a_cell_is_rejected_in_one_line_before_compute_or_finishes(tmp_path_factory, extra):
    from benchmark.cell import run_cell

    results = tmp_path_factory.mktemp("cell")
    cfg = _compose(results, extra)
    if cfg is None:
        event("Hydra refused to compose")
        assert not any(results.iterdir())
        return
    try:
        check_config(cfg)  # as benchmark.run does: the checks without torch, then run_cell's (all of them)
        result = run_cell(cfg)
    except ConfigError as err:
        event(f"rejected: {str(err).split('=')[0].split(' ')[0]}")
        assert "\n" not in str(err), str(err)
        assert not any(results.iterdir()), "a rejected cell leaves no store, cache or lock behind"
        return
    event("finished")
    assert result.status == "finished", (extra, result)


def _cli(results: Path, extra: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "benchmark.run", *BASE, *extra, "device=cpu", f"results_dir={results}"],
                          cwd=ROOT, env=cli_env(), capture_output=True, text=True, timeout=300)


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(extra=overrides().filter(lambda extra: len(extra) > len(OPTIONS)))  # at least one mutation
def test_cli_exits_2_in_one_line_with_the_store_untouched_or_finishes(tmp_path_factory, extra):
    results = tmp_path_factory.mktemp("cli")
    out = _cli(results, extra)
    text = out.stdout + out.stderr
    assert "Traceback" not in text, (extra, text[-3000:])
    if out.returncode == 2:
        said = [line for line in text.splitlines() if line.strip()]
        assert len(said) == 1 and "config rejected: " in said[0], (extra, said)
        assert not any((results / name).exists() for name in ("mlflow.db", "cache", "mlartifacts", "locks"))
        return
    assert out.returncode == 0, (extra, text[-3000:])
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{results / 'mlflow.db'}")
    assert list(mlflow.search_runs(search_all_experiments=True)["status"]) == ["FINISHED"], extra


def test_leaves_lists_every_key_hydra_can_override():
    keys = _leaves(make_cfg("unused", *BASE, "threat=pgd"))
    assert {"threat.attacks.0.max_iter", "eval.latency.threads", "pruning.sparsity", "threat.eps"} <= set(keys)
    assert "threat.eps.0" not in keys  # an interpolation (of dataset.eps) is one key


# ---- tracking URIs: every scheme MLflow has a store for, and some it has not -----------------------------------
SCHEMES = ["http", "https", "postgresql", "postgresql+psycopg", "mysql", "mysql+pymysql", "mssql", "sqlite", "file",
           "databricks", "databricks-uc", "uc", "bogus", ""]


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@st.composite
def tracking_uris(draw) -> tuple[str, str]:
    """(URI, the password in it, or '' for none)."""
    scheme = draw(st.sampled_from(SCHEMES))
    password = draw(st.sampled_from(["", "pw-Secret-1"]))
    user = f"alice:{password}@" if password else ""
    host = draw(st.sampled_from(["127.0.0.1", "localhost", "nowhere.invalid"]))
    if scheme == "sqlite":
        return f"sqlite:///{draw(st.sampled_from(['/nonexistent/dir/mlflow.db', '/dev/null']))}", ""
    if scheme in ("", "file"):
        return f"{scheme + '://' if scheme else ''}/tmp/prunesec-property-mlruns", ""
    if scheme == "databricks" and draw(st.booleans()):
        return "databricks", ""
    return f"{scheme}://{user}{host}:{_closed_port()}/mlflow", password


@settings(max_examples=40, deadline=None)
@given(drawn=tracking_uris())
def test_a_store_is_refused_in_one_line_within_the_probe_time_without_its_password(drawn):
    from benchmark.tracking_store import PROBE_TIMEOUT_S, StoreUnavailable, probe_store

    uri, password = drawn
    started = time.monotonic()
    try:
        found = probe_store(uri)
    except StoreUnavailable as err:
        event(f"refused: {uri.split(':', 1)[0]}")
        assert "\n" not in str(err) and (not password or password not in str(err)), str(err)
        assert time.monotonic() - started < 2 * PROBE_TIMEOUT_S + 5, uri
        return
    event("accepted")
    assert uri.startswith("sqlite:///") and found is False  # a SQLite store not created yet


# ---- your own data: npz archives of every shape, dtype and label set ------------------------------------------
# Each list repeats its valid choices, so that about one drawn file in five is valid data.
X_DTYPES = [np.uint8, np.uint8, np.float32, np.float32, np.float64, np.float16, np.int64, np.bool_, np.complex64]
Y_DTYPES = [np.int64, np.int64, np.int64, np.int32, np.uint8, np.float64, np.bool_, object]
PIXELS = ["unit", "unit", "unit", "255", "nan", "inf", "negative"]


@st.composite
def npz_files(draw) -> dict[str, np.ndarray]:
    split = draw(st.booleans())
    ndim = draw(st.sampled_from([2, 3, 3, 4, 4, 5]))
    side, channels = draw(st.sampled_from([0, 1, 8, 12, 12])), draw(st.sampled_from([1, 2, 3, 3]))
    x_dtype, y_dtype = draw(st.sampled_from(X_DTYPES)), draw(st.sampled_from(Y_DTYPES))
    pixels = draw(st.sampled_from(PIXELS))
    classes = draw(st.sampled_from([1, 2, 3, 4]))
    label_range = draw(st.sampled_from(["dense", "dense", "dense", "gap", "negative", "huge"]))

    def images(n):
        shape = {2: (n, side * side), 3: (n, side, side), 4: (n, side, side, channels),
                 5: (n, 1, channels, side, side)}[ndim]
        x = np.random.default_rng(n).random(shape)
        if pixels == "255":
            x = x * 255
        elif pixels in ("nan", "inf", "negative") and x.size:
            x.flat[0] = {"nan": np.nan, "inf": np.inf, "negative": -0.5}[pixels]
        if not np.issubdtype(x_dtype, np.inexact):  # integer and boolean images: the values their type can hold
            return np.nan_to_num(x * 255, posinf=255, neginf=0).clip(0, 255).astype(x_dtype)
        return x.astype(x_dtype)

    def labels(n):
        y = np.arange(n) % classes
        y = {"dense": y, "gap": y * 2, "negative": y - 1, "huge": y + (2**40 if n else 0)}[label_range]
        return y.astype(str).astype(object) if y_dtype is object else y.astype(y_dtype)

    n_train, n_test = draw(st.integers(0, 24)), draw(st.integers(0, 8))
    n_train, n_test = (n_train + 8, n_test + 4) if draw(st.booleans()) else (n_train, n_test)
    if split:
        return {"x_train": images(n_train), "y_train": labels(n_train), "x_test": images(n_test),
                "y_test": labels(n_test)}
    return {"x": images(n_train + n_test), "y": labels(n_train + n_test)}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(arrays=npz_files())
def test_a_data_file_is_rejected_in_one_line_by_the_check_without_torch_or_loads_as_valid_data(tmp_path_factory,
                                                                                              arrays):
    """What the pre-check lets through loads as images in [0, 1] with at least two classes; everything else is a
    one-line DataError from the check that runs before any run exists."""
    from benchmark.data import load_dataset
    from benchmark.inputs import DataError, dataset_shape, split_sizes

    folder = tmp_path_factory.mktemp("npz")
    np.savez(folder / "d.npz", **arrays)
    cfg = make_cfg(folder, "dataset=npz", f"dataset.path={folder / 'd.npz'}", "dataset.test_size=0.25").dataset
    try:
        shape = dataset_shape(cfg)
        sizes = split_sizes(cfg)
    except DataError as err:
        event(f"rejected: {str(err).split(' has ')[0].split(';')[0][:40]}")
        assert "\n" not in str(err), str(err)
        return
    event("accepted")
    data = load_dataset(cfg, seed=0)
    assert shape.num_classes >= 2 and (len(data.y_train), len(data.y_test)) == sizes and min(sizes) >= 1
    for x in (data.x_train, data.x_test):
        assert bool(x.isfinite().all()) and float(x.min()) >= 0 and float(x.max()) <= 1
        assert tuple(x.shape[1:]) == (shape.in_channels, shape.image_size, shape.image_size)
    assert int(max(data.y_train.max(), data.y_test.max())) < shape.num_classes and int(data.y_train.min()) >= 0
    assert not math.isnan(float(data.x_train.sum()))


def _mutated(cfg: DictConfig, key: str, delete: bool) -> DictConfig:
    """`cfg` with `key` deleted (Hydra's `~key`) or set to null (`key=null`)."""
    cfg = cfg.copy()
    OmegaConf.set_struct(cfg, False)
    parent, _, leaf = key.rpartition(".")
    node = OmegaConf.select(cfg, parent) if parent else cfg
    if delete and isinstance(node, ListConfig):
        node.pop(int(leaf))
    elif delete:
        node.pop(leaf)
    else:
        node[int(leaf) if isinstance(node, ListConfig) else leaf] = None
    return cfg


@pytest.mark.parametrize("dataset", ["digits", "mnist5k"])
def test_every_key_deleted_or_nulled_is_rejected_in_one_line_or_accepted_by_the_checks(dataset):
    """The exhaustive twin of the properties above for the mutations a user makes most: each key of a cell's
    config, deleted or set to null, is a one-line ConfigError or passes the torch-free checks, never another
    exception."""
    cfg = make_cfg("unused", *BASE, f"dataset={dataset}", "pruning=anp", "threat=pgd")
    crashed = {}
    for key in _leaves(cfg):
        for delete in (True, False):
            try:
                check_config(_mutated(cfg, key, delete))
            except ConfigError as err:
                assert "\n" not in str(err), (key, delete, str(err))
            except Exception as err:  # noqa: BLE001 - what the test looks for
                crashed[("~" if delete else "") + key + ("" if delete else "=null")] = f"{type(err).__name__}: {err}"
    assert not crashed, crashed
