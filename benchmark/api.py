"""The Python API, `from benchmark import evaluate, prune`: a module object you hold, measured or pruned by the
cell pipeline itself (benchmark/cell.py, benchmark/stages.py), with the same config, validation and hashing as
`python -m benchmark.run`.

The config is composed from conf/ with Hydra's compose API and the overrides of the command line. Your module
enters it by content: its weights are written as a safetensors checkpoint (`model.checkpoint`, identified by its
sha256 as any checkpoint is), and its architecture is the registered model you name (`overrides=["model=seed_cnn"]`,
which makes the cell exactly the command line's `model=seed_cnn model.checkpoint=<that file>`) or, by default, the
object itself (`model.name: instance`, models/instance.py: held by this process, identified by its structure and
its classes' code). Arrays or tensors as data are written as an npz archive (`dataset=npz`, identified by its
sha256, byte-identical for the same arrays). Both files go to `<results_dir>/inputs/`, named by their sha256, so the
logged config names files that exist and the command line can rerun the cell.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Mapping, NamedTuple, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
from omegaconf import DictConfig, OmegaConf, open_dict

from benchmark.checks import ConfigError
from benchmark.validate import CONF_DIR, check_device, check_group_overrides, compose_config

__all__ = ["Pruned", "evaluate", "prune"]

# evaluate measures the module as it is: no pruning, no fine-tuning (both can be overridden, as in a cell)
AS_IT_IS = ("pruning=none", "finetune.epochs=0")
_NPZ_KEYS = {2: ("x", "y"), 4: ("x_train", "y_train", "x_test", "y_test")}


class Pruned(NamedTuple):
    model: nn.Module
    sparsity: float  # achieved: the fraction of the module's prunable weights that are zero or removed
    info: dict  # what the method reports (e.g. pruning/channel_ratio)


def evaluate(model: nn.Module, data, threat: str = "strong", *, log: bool = True, overrides: Sequence[str] = (),
             **options) -> pd.Series:
    """Measure `model` as a cell does (clean and train accuracy, cost, calibration, corruptions, attributions per
    `eval`, and every attack of `threat`) and return its metrics: a pandas Series indexed by metric name (a cell is
    one row of metrics), named by the run name, with `attrs` cell_hash, run_id (None unless logged), run_name,
    status ("finished", or "skipped" when that cell had already FINISHED in the store: its logged metrics) and
    config (the resolved config).

    `data`: a dataset option of conf/dataset/ ("digits"), an .npz file, or arrays or tensors: (x, y) (split here
    by dataset.test_size), (x_train, y_train, x_test, y_test) or a dict with those names; images in [0, 1] or
    uint8. `log=False`: no MLflow run (the model caches are used alike). `overrides`: command-line overrides
    ("model=seed_cnn", "eval=fast", "threat.subset=100"); `**options`: more of them as key=value (`seed=1`,
    `results_dir="out"`; `__` stands for a dot: `threat__subset=100`). The defaults `pruning=none
    finetune.epochs=0` evaluate the module as it is; `pruning=<method>` prunes it first, as a cell prunes its
    dense model. A bad value raises ConfigError with one line, before any compute."""
    from benchmark.cell import run_cell
    from benchmark.tracking_store import probe_store, tracking_uri_of

    cfg = _config(model, data, [*AS_IT_IS, f"threat={threat}", *overrides, *_option_overrides(options)])
    check_device(cfg.device)
    if log:
        probe_store(tracking_uri_of(cfg))
    result = run_cell(cfg, logged=log)
    metrics = result.metrics if result.status == "finished" else _logged_metrics(result.run_id)
    report = pd.Series(metrics, name=result.run_name, dtype=float).sort_index()
    report.attrs = {"cell_hash": result.cell_hash, "run_id": result.run_id, "run_name": result.run_name,
                    "status": result.status, "config": OmegaConf.to_container(cfg, resolve=True)}
    return report


def _logged_metrics(run_id: str) -> dict[str, float]:
    """A FINISHED run's metrics without its curves (metrics logged at several steps, or at a step other than 0:
    the fine-tune losses, the robust-accuracy curves), i.e. the dict the cell logged with its metrics."""
    import mlflow

    client = mlflow.MlflowClient()
    history = {key: client.get_metric_history(run_id, key) for key in client.get_run(run_id).data.metrics}
    return {key: points[0].value for key, points in history.items() if len(points) == 1 and points[0].step == 0}


def prune(model: nn.Module, method: str, sparsity: float, data, *, overrides: Sequence[str] = (),
          **options) -> Pruned:
    """`model` pruned by the registered method `method` (conf/pruning/) to `sparsity`, with the cell's pruning
    stage: calibration batches from `data`'s training split (forms as in `evaluate`), validation, and the model
    cache (`<results_dir>/cache/`, keyed like a cell's pruned model). No fine-tuning unless `finetune.epochs` says
    so; `model` itself is left unchanged. Returns (model, achieved sparsity, the method's info)."""
    from benchmark import hashing, stages
    from benchmark.cache import ModelCache
    from benchmark.cell import prepare
    from benchmark.data import cell_data
    from benchmark.pruning.common import achieved_sparsity, layer_weight_counts
    from benchmark.training import resolve_device

    cfg = _config(model, data, [*AS_IT_IS, f"pruning={method}", f"pruning.sparsity={sparsity}", *overrides,
                                *_option_overrides(options)])
    check_device(cfg.device)
    prepare(cfg)
    device, use_cache = resolve_device(cfg.device), not cfg.force
    cache = ModelCache(Path(cfg.results_dir).resolve() / "cache")
    data_set = cell_data(cfg)  # as a cell's: the defender split held out
    dense_key = hashing.dense_key(cfg, None)
    dense, _ = stages.dense_model(cfg, data_set, dense_key, cache, device, use_cache)
    pruned, meta = stages.pruned_model(cfg, dense, stages.TrainingSets.clean(data_set),
                                       hashing.pruned_key(dense_key, cfg), cache, device, use_cache)
    achieved, _ = achieved_sparsity(layer_weight_counts(dense, cfg.pruning.prune_head), pruned,
                                    cfg.pruning.prune_head)
    return Pruned(pruned, achieved, dict(meta["info"]))


# --- the config -----------------------------------------------------------------------------------------------

def _config(model, data, overrides: list[str]) -> DictConfig:
    """The cell config of `model` on `data` with `overrides`, composed as the command line composes it, with the
    module's weights and any arrays written to `<results_dir>/inputs/` and named in it."""
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model={type(model).__name__} is not a torch.nn.Module; allowed: an nn.Module (pruned "
                          "or not)")
    data_overrides, arrays = _data_overrides(data)
    named_architecture = any(_key(o) == "model" for o in overrides)
    overrides = [*data_overrides, *overrides]
    check_group_overrides(overrides)
    cfg = compose_config(overrides)
    inputs = Path(cfg.results_dir).resolve() / "inputs"
    with open_dict(cfg):
        if arrays is not None:
            cfg.dataset.path = str(write_npz(arrays, inputs / "data"))
        if not named_architecture:
            from models.instance import hold

            cfg.model = {**hold(model), "normalize": cfg.model.get("normalize"), "checkpoint": None}
        cfg.model.checkpoint = str(write_checkpoint(model, inputs / "models"))
    return cfg


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def _option_overrides(options: Mapping[str, object]) -> list[str]:
    """key=value pairs as command-line overrides (`__` in a key stands for a dot)."""
    return [f"{key.replace('__', '.')}={_hydra_value(value)}" for key, value in options.items()]


def _hydra_value(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_hydra_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{k}:{_hydra_value(v)}" for k, v in value.items()) + "}"
    return str(value)


def _data_overrides(data) -> tuple[list[str], dict[str, np.ndarray] | None]:
    """(overrides, arrays to write) for the forms `data` may take."""
    if isinstance(data, (str, os.PathLike)):
        path = Path(data).expanduser()
        if path.suffix == ".npz":
            return ["dataset=npz", f"dataset.path={path.resolve()}"], None
        options = sorted(p.stem for p in (CONF_DIR / "dataset").glob("*.yaml"))
        if str(data) not in options:
            raise ConfigError(f"data={str(data)!r} is no dataset option nor an .npz file; allowed: one of {options}, "
                              "an .npz path, or arrays (x, y) / (x_train, y_train, x_test, y_test)")
        return [f"dataset={data}"], None
    if isinstance(data, Mapping):
        arrays = dict(data)
    elif isinstance(data, (tuple, list)) and len(data) in _NPZ_KEYS:
        arrays = dict(zip(_NPZ_KEYS[len(data)], data))
    else:
        raise ConfigError(f"data of type {type(data).__name__} is not allowed; allowed: a dataset option name, an "
                          ".npz path, (x, y), (x_train, y_train, x_test, y_test) or a dict with those names")
    if set(arrays) not in ({*keys} for keys in _NPZ_KEYS.values()):
        raise ConfigError(f"data has arrays {sorted(arrays)}; allowed: {list(_NPZ_KEYS[2])} or {list(_NPZ_KEYS[4])}")
    return ["dataset=npz"], {k: _numpy(v) for k, v in arrays.items()}


def _numpy(value) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


# --- content-addressed inputs ----------------------------------------------------------------------------------

def _store(content: bytes, folder: Path, suffix: str) -> Path:
    """`content` at folder/<sha256><suffix>, written atomically once."""
    from benchmark.cache import atomic_write

    path = folder / f"{hashlib.sha256(content).hexdigest()}{suffix}"
    if not path.is_file():
        atomic_write(path, lambda tmp: Path(tmp).write_bytes(content))
    return path


def write_checkpoint(model: nn.Module, folder: Path) -> Path:
    """The module's state dict as safetensors (no metadata: the same tensors give the same bytes, the file
    `safetensors.torch.save_file(model.state_dict(), path)` writes)."""
    from safetensors.torch import save

    state = {k: v.detach().cpu().clone().contiguous() for k, v in model.state_dict().items()}
    return _store(save(state), folder, ".safetensors")


def write_npz(arrays: dict[str, np.ndarray], folder: Path) -> Path:
    """The arrays as an uncompressed .npz archive whose bytes depend on the arrays alone (np.savez stamps each
    member with the time of writing)."""
    with tempfile.SpooledTemporaryFile() as buffer:
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
            for key in sorted(arrays):
                member = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
                with archive.open(member, "w", force_zip64=True) as f:
                    np.lib.format.write_array(f, np.ascontiguousarray(arrays[key]), allow_pickle=False)
        buffer.seek(0)
        return _store(buffer.read(), folder, ".npz")
