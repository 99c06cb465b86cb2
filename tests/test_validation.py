"""Bad input fails before any compute, naming the key, the value and what is allowed."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch.nn as nn
from hydra.errors import MissingConfigException

import benchmark.cell
import benchmark.stages
import models
from benchmark.cell import run_cell
from benchmark.validate import ConfigError, validate

from conftest import make_cfg


@pytest.fixture
def no_compute(monkeypatch):
    """Any data loading or training fails the test: validation must stop a bad cell first."""
    def forbidden(*args, **kwargs):
        raise AssertionError("compute started before validation rejected the config")

    monkeypatch.setattr(benchmark.cell, "cell_data", forbidden)
    monkeypatch.setattr(benchmark.stages, "fit", forbidden)


# (overrides, what the message must contain: key=value and the allowed values or range)
BAD = [
    (["dataset.name=imagenet"], ["dataset.name='imagenet'", "allowed:", "mnist5k", "digits"]),
    (["data.defender_size=-1"], ["data.defender_size=-1", "0.0 < defender_size"]),
    (["data.defender_size=5000"], ["data.defender_size=5000", "allowed: fewer than 1437"]),
    (["data.defender_size=2.5"], ["data.defender_size=2.5", "allowed: a whole number"]),
    (["model.name=resnet50"], ["model.name='resnet50'", "'seed_cnn'", "'resnet20'"]),
    (["pruning.method=sparsegpt"], ["pruning.method='sparsegpt'", "magnitude_global", "l1_filter"]),
    (["threat.kind=telepathy"], ["threat.kind='telepathy'", "evasion"]),
    (["threat.attacks.0.name=cw"], ["threat.attacks[0].name='cw'", "pgd_linf", "fgsm"]),
    (["device=tpu"], ["device='tpu'", "'cpu'", "'cuda'", "'auto'"]),
    # keys the code reads have no silent schema default: deleting one is a config mistake, not a crash mid-cell
    (["~eval.collapse_margin"], ["eval.collapse_margin is missing", "0.0 <= collapse_margin <= 1.0"]),
    (["~finetune.adversarial"], ["finetune.adversarial is missing", "true or false"]),
    (["pruning=taylor", "~pruning.scope"], ["pruning.scope is missing", "'global', 'layerwise'"]),
    (["dataset.test_size=0.001"], ["dataset.test_size=0.001 splits 1797 images into 1795 train / 2 test",
                                   "at least one image per class (10)"]),
    (["pruning.sparsity=1.0"], ["pruning.sparsity=1.0", "0.0 <= sparsity < 1.0"]),
    (["pruning.sparsity=1.5"], ["pruning.sparsity=1.5", "0.0 <= sparsity < 1.0"]),
    (["pruning.sparsity=-0.1"], ["pruning.sparsity=-0.1", "0.0 <= sparsity < 1.0"]),
    (["pruning.sparsity=half"], ["pruning.sparsity='half' is not a number", "0.0 <= sparsity < 1.0"]),
    (["pruning=threshold", "pruning.rate=1.2"], ["pruning.rate=1.2", "0.0 <= rate <= 1.0"]),
    (["pruning=hydra", "pruning.loss=mse"], ["pruning.loss='mse' is unknown", "allowed: 'ce' or 'trades'"]),
    (["pruning=hydra", "pruning.trades_beta=-1"], ["pruning.trades_beta=-1", "0.0 <= trades_beta <= 1000.0"]),
    (["dataset.eps=[0.1,-0.05]"], ["dataset.eps[1]=-0.05", "0.0 <= eps[1] <= 1.0"]),
    (["train.epochs=-1"], ["train.epochs=-1", "1 <= epochs <= 10000"]),
    (["finetune.epochs=-2"], ["finetune.epochs=-2", "0 <= epochs"]),
    (["train.lr=0"], ["train.lr=0", "<= lr <= 10.0"]),
    (["finetune.batch_size=0"], ["finetune.batch_size=0", "1 <= batch_size"]),
    (["seed=-1"], ["seed=-1", "0 <= seed <= 4294967295"]),
    (["threat.subset=0"], ["threat.subset=0", "1 <= subset"]),
    (["threat.attacks.0.max_iter=0"], ["threat.attacks[0].max_iter=0", "1 <= max_iter"]),
    (["threat.attacks.0.batch_size=-5"], ["threat.attacks[0].batch_size=-5", "1 <= batch_size"]),
    (["threat.attacks.0.step_fraction=0"], ["threat.attacks[0].step_fraction=0", "<= step_fraction <= 10.0"]),
    (["threat=badnets", "threat.poison_rate=1.5"], ["threat.poison_rate=1.5", "0.0 <= poison_rate <= 1.0"]),
    (["torch_threads=0"], ["torch_threads=0", "1 <= torch_threads"]),
    (["eval.train_subset=0"], ["eval.train_subset=0", "1 <= train_subset"]),
    # whole-number keys reject fractions before compute, not mid-compute
    (["train.epochs=1.5"], ["train.epochs=1.5 is not a whole number", "1 <= epochs <= 10000"]),
    (["train.batch_size=32.5"], ["train.batch_size=32.5 is not a whole number", "1 <= batch_size"]),
    (["threat.subset=10.5"], ["threat.subset=10.5 is not a whole number", "1 <= subset"]),
    (["train.epochs=2.0"], ["train.epochs=2.0 is not a whole number"]),
    (["train.epochs=true"], ["train.epochs=True is not a whole number"]),
    # a dense model trained for 0 epochs stays at chance accuracy
    (["train.epochs=0"], ["train.epochs=0 is out of range", "1 <= epochs"]),
    # a number where a list belongs: one line naming the key, not a traceback from the validator
    (["threat.eps=0.1"], ["threat.eps=0.1 is not allowed", "a list, each a number 0.0 <= eps[i] <= 1.0"]),
    # required keys, unknown keys
    (["~pruning.sparsity"], ["pruning.sparsity is missing", "0.0 <= sparsity < 1.0"]),
    (["~threat.attacks"], ["threat.attacks is missing"]),
    (["+pruning.sparsityy=0.5"], ["pruning.sparsityy=0.5 is not a key of pruning", "allowed keys: sparsity, prune_head"]),
    (["+eval.latency.warmup=3"], ["eval.latency.warmup=3 is not a key of eval.latency", "batch_size, repeats, threads"]),
    (["+surprise=1"], ["surprise=1 is not a key of the config"]),
    (["pruning=random", "+pruning.schedule=iterative"], ["pruning.schedule='iterative' is not a key of pruning"]),
    (["threat=strong", "threat.attacks.4.components=[]"], ["threat.attacks[4].components=[] is empty"]),
    (["threat=badnets", "threat.target_class=10"], ["threat.target_class=10 is out of range", "0 <= target_class <= 9"]),
    (["threat.name=${nowhere}"], ["threat.name cannot be resolved"]),
    # impossible combination: the seed CNN's two conv+pool stages need at least 10x10 images
    (["dataset.image_size=8"], ["model.name='seed_cnn' does not fit dataset.name='digits'", "at least 10x10"]),
]


@pytest.mark.parametrize("overrides,expected", BAD, ids=[" ".join(o) for o, _ in BAD])
def test_bad_config_fails_before_any_compute_naming_key_value_and_allowed(tmp_path, no_compute, overrides, expected):
    with pytest.raises(ConfigError) as err:
        run_cell(make_cfg(tmp_path, *overrides))
    for text in expected:
        assert text in str(err.value), (text, str(err.value))
    assert not any(tmp_path.iterdir()), "a rejected cell must not create the store, cache or locks"


def test_edges_of_the_ranges_are_accepted(tmp_path):
    """0 sparsity, eps 0 and 0 fine-tune epochs are legal (the dense point, the clean point, no fine-tuning)."""
    cfg = make_cfg(tmp_path, "pruning.sparsity=0.0", "dataset.eps=[0.0,1.0]", "finetune.epochs=0", "torch_threads=1")
    benchmark.cell.prepare(cfg)


def test_schema_names_are_the_registries():
    """Every plugin kind declares its own config model, whose discriminator names it (one model may serve several
    names, as PGD's serves pgd_linf and pgd_l2); the schema's unions are assembled from the registries."""
    import typing

    from attacks import THREATS
    from attacks.backdoor_attacks import BACKDOOR_ATTACKS
    from attacks.evasion_attacks import EVASION_ATTACKS
    from attacks.poisoning_attacks import POISONING_ATTACKS
    from benchmark import schema
    from benchmark.config_messages import names
    from benchmark.datasets import DATASETS
    from benchmark.interpretability import METHODS
    from benchmark.pruning import PRUNERS
    from models import MODELS

    assert names(schema.PRUNING) == set(PRUNERS) and names(schema.DATASET) == set(DATASETS)
    assert all(entry.config.model_fields["method"].annotation == typing.Literal[entry.name] for entry in PRUNERS.entries())
    for registry, field in ((DATASETS, "name"), (EVASION_ATTACKS, "name"), (POISONING_ATTACKS, "attack"),
                            (BACKDOOR_ATTACKS, "attack"), (MODELS, "name")):
        declared = [entry for entry in registry.entries() if entry.config is not None]
        assert all(entry.name in typing.get_args(entry.config.model_fields[field].annotation) for entry in declared)
    assert names(schema.THREAT) == set(THREATS)
    assert names(schema.ATTACK) == set(EVASION_ATTACKS) and len(EVASION_ATTACKS.names()) >= 10
    assert names(schema.POISONING) == set(POISONING_ATTACKS) and names(schema.BACKDOOR) == set(BACKDOOR_ATTACKS)
    assert set(typing.get_args(typing.get_args(schema.Interpret.model_fields["methods"].annotation)[0])) == set(METHODS)


def test_dataset_files_are_torchvisions():
    import torchvision.datasets as tv

    from benchmark.datasets import DATASETS

    DATASET_FILES = {entry.name: entry.files for entry in DATASETS.entries()}
    mnist_like = [Path(url).stem for url, _ in tv.MNIST.resources]  # torchvision checks the unpacked files
    assert DATASET_FILES["mnist"] == tuple(f"MNIST/raw/{name}" for name in mnist_like)
    assert DATASET_FILES["fashion_mnist"] == tuple(
        f"FashionMNIST/raw/{Path(url).stem}" for url, _ in tv.FashionMNIST.resources)
    assert DATASET_FILES["cifar10"] == tuple(
        f"{tv.CIFAR10.base_folder}/{name}" for name, _ in tv.CIFAR10.train_list + tv.CIFAR10.test_list)
    assert DATASET_FILES["svhn"] == tuple(tv.SVHN.split_list[split][1] for split in ("train", "test"))


def test_missing_dataset_files_are_rejected_before_compute_and_present_ones_accepted(tmp_path, no_compute):
    from benchmark.datasets import DATASETS
    from benchmark.validate import check_config

    root = tmp_path / "data"
    cfg = make_cfg(tmp_path / "results", "dataset=cifar10", f"dataset.data_root={root}", "model=lenet300")
    with pytest.raises(ConfigError, match=r"dataset.data_root='.*/data' lacks the cifar10 files .*data_batch_1"):
        run_cell(cfg)
    assert not (tmp_path / "results").exists(), "no store, cache or run for a cell that cannot start"
    for name in DATASETS["cifar10"].files:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).touch()
    check_config(cfg)
    check_config(make_cfg(tmp_path, "dataset=cifar10", f"dataset.data_root={tmp_path / 'none'}", "dataset.download=true"))


def test_a_split_without_room_for_every_class_is_rejected_by_the_checks_without_torch(tmp_path):
    from benchmark.validate import check_config

    with pytest.raises(ConfigError, match=r"dataset.test_size=0.001 splits 1797 images into 1795 train / 2 test"):
        check_config(make_cfg(tmp_path, "dataset=digits", "dataset.test_size=0.001"))


def test_unknown_config_group_option_is_rejected_by_hydra_with_the_options():
    with pytest.raises(MissingConfigException) as err:
        make_cfg("unused", "model=resnet50")
    assert "model/resnet50" in str(err.value) and "seed_cnn" in str(err.value)


def test_misspelt_key_is_rejected_by_hydra():
    with pytest.raises(Exception, match="sparsty"):
        make_cfg("unused", "pruning.sparsty=0.5")


def test_structured_method_on_a_model_without_prunable_channels(tmp_path, monkeypatch, no_compute):
    # a logistic regression: its only layer is the classifier head, which structured pruning must keep
    models.MODELS.register("logreg")(lambda c, s, n: nn.Sequential(nn.Flatten(), nn.Linear(c * s * s, n)))
    try:
        with pytest.raises(ConfigError, match=r"pruning.method='l1_filter' does not fit model.name='logreg'.*no "
                                              "prunable channels besides its classifier head"):
            validate(make_cfg(tmp_path, "pruning=l1_filter", "model.name=logreg"))
        validate(make_cfg(tmp_path, "pruning=magnitude_global", "model.name=logreg"))  # fine
    finally:
        models.MODELS.unregister("logreg")


def test_grid_size_counts_a_command_line_sweep_once_when_it_replaces_the_presets():
    from omegaconf import OmegaConf

    from benchmark.grid import grid_size

    def sweep(params, task):
        return OmegaConf.create({"hydra": {"sweeper": {"params": params}, "overrides": {"task": task}}})

    preset = {"model": "seed_cnn,lenet300", "pruning.sparsity": "0.0,0.5,0.9"}
    assert grid_size(sweep(preset, [])) == 6
    assert grid_size(sweep(preset, ["pruning.sparsity=0.5,0.7", "seed=0,1,2"])) == 2 * 2 * 3
    assert grid_size(sweep(preset, ["model=seed_cnn"])) == 3  # a plain value replaces the preset's sweep
    assert grid_size(sweep(None, ["pruning=none"])) == 1


def test_missing_dataset_files_give_a_clear_message(tmp_path):
    from benchmark.data import DatasetUnavailable, load_dataset

    cfg = make_cfg(tmp_path, "dataset=mnist", f"dataset.data_root={tmp_path / 'nowhere'}", "dataset.download=false")
    with pytest.raises(DatasetUnavailable) as err:
        load_dataset(cfg.dataset, seed=0)
    message = str(err.value)
    assert "nowhere" in message and "download=false" in message and "download=True" in message


# ---- `python -m benchmark.run` on inputs that once reached a traceback or a FAILED run --------------------------
def _npz(folder: Path, name: str, **replace) -> str:
    """A small valid archive (4 classes of 12x12 grey images, uint8) with some arrays replaced."""
    rng = np.random.default_rng(0)
    arrays = {"x_train": rng.integers(0, 256, (64, 12, 12), dtype=np.uint8), "y_train": np.arange(64) % 4,
              "x_test": rng.integers(0, 256, (32, 12, 12), dtype=np.uint8), "y_test": np.arange(32) % 4, **replace}
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / f"{name}.npz", **arrays)
    return str(folder / f"{name}.npz")


def _float_pixels(nan: bool = False, scale: float = 1.0):
    x = np.random.default_rng(1).random((64, 12, 12)).astype(np.float32) * scale
    if nan:
        x[3, 2, 2] = np.nan
    return x


NPZ = ["dataset=npz", "eval.train_subset=20", "threat.subset=20"]
# (overrides, or a function of the data folder giving them; how the one line continues after "... rejected: ")
CLI_BAD = [
    (["train.lr=nan"], "train.lr=nan is not a finite number; allowed: a number 1e-12 <= lr <= 10.0"),
    (["pruning.sparsity=nan"], "pruning.sparsity=nan is not a finite number; allowed: a number 0.0 <= sparsity < 1.0"),
    (["dataset.eps=[nan]"], "dataset.eps[0]=nan is not a finite number"),
    (["eval.collapse_margin=nan"], "eval.collapse_margin=nan is not a finite number"),
    (["threat.eps=[]"], "threat.eps=[] is empty but threat.attacks[0].name='fgsm' is an L-inf attack; allowed: at "
                        "least one budget"),
    (lambda d: [*NPZ, "dataset.path=" + _npz(d, "one_class", y_train=np.zeros(64, int), y_test=np.zeros(32, int))],
     "dataset.path: y_train+y_test has labels of one class (0); allowed: labels of at least 2 classes"),
    (lambda d: [*NPZ, "dataset.path=" + _npz(d, "nan_pixels", x_train=_float_pixels(nan=True))],
     "dataset.path: x_train has NaN or infinite pixel values; allowed: finite floats in [0, 1]"),
    (lambda d: [*NPZ, "dataset.path=" + _npz(d, "pixels_255", x_train=_float_pixels(scale=255.0))],
     "dataset.path: x_train has float pixel values in ["),
    (lambda d: [*NPZ, "dataset.path=" + _npz(d, "object_labels", y_train=np.array([str(i % 4) for i in range(64)],
                                                                                  dtype=object))],
     "dataset.path: y_train has dtype object"),
    (lambda d: [*NPZ, "dataset.path=" + _npz(d, "huge_label", y_train=np.where(np.arange(64) == 0, 2**40,
                                                                               np.arange(64) % 4))],
     "dataset.path: y_train has label 1099511627776; allowed: class labels 0..K-1 with K <= 100000"),
    (["tracking_uri=postgresql://u:p@127.0.0.1:1/mlflow"],
     "database postgresql://***@127.0.0.1:1/mlflow is unreachable (no TCP connection to 127.0.0.1:1"),
    (lambda d: [f"tracking_uri=file://{d}/mlruns"], "tracking_uri='file://"),
    (lambda d: [f"model.checkpoint={d}/missing.pt"], "model.checkpoint='"),
    (["model=torchvision", "model.arch=nonet"], "model.arch='nonet' is not a torchvision classification model"),
    (["pruning=hydra", "pruning.loss=kl"], "pruning.loss='kl' is unknown; allowed: 'ce' or 'trades'"),
]


def _runs(results: Path) -> dict[str, str]:
    import sqlite3

    with sqlite3.connect(results / "mlflow.db") as db:
        return dict(db.execute("SELECT run_uuid, status FROM runs").fetchall())


@pytest.fixture(scope="module")
def store_with_a_run(tmp_path_factory):
    """A results dir whose store holds one FINISHED run (made directly: no cell needs to run for it)."""
    from mlflow.tracking import MlflowClient

    from benchmark import tracking
    from benchmark.tracking_store import default_tracking_uri

    results = tmp_path_factory.mktemp("store")
    experiment = tracking.setup_experiment(default_tracking_uri(results), "default", results / "mlartifacts")
    client = MlflowClient(default_tracking_uri(results))
    client.set_terminated(client.create_run(experiment).info.run_id, "FINISHED")
    return results


@pytest.mark.parametrize("overrides,reason", CLI_BAD, ids=[
    " ".join(o) if isinstance(o, list) else r.split(";")[0][:60] for o, r in CLI_BAD])
def test_cli_rejects_in_one_line_with_the_real_reason_first_and_the_store_unchanged(store_with_a_run, tmp_path,
                                                                                    overrides, reason):
    import subprocess
    import sys

    from conftest import ROOT, cli_env

    args = overrides(tmp_path) if callable(overrides) else overrides
    before = _runs(store_with_a_run)
    out = subprocess.run([sys.executable, "-m", "benchmark.run", "debug=tiny", "model=lenet300", "threat=fgsm",
                          *args, f"results_dir={store_with_a_run}"], cwd=ROOT, env=cli_env(), capture_output=True,
                         text=True, timeout=300)
    said = [line for line in (out.stdout + out.stderr).splitlines() if line.strip()]
    assert out.returncode == 2, said[-30:]
    assert len(said) == 1, said
    message = said[0].split(" rejected: ", 1)[-1]
    assert message.startswith(reason), said[0]
    assert _runs(store_with_a_run) == before, "a rejected input creates or changes no run"


def test_a_joblib_grid_over_bad_data_is_rejected_by_its_pre_check_with_no_run(store_with_a_run, tmp_path):
    import subprocess
    import sys

    from conftest import ROOT, cli_env

    path = _npz(tmp_path, "nan_pixels", x_train=_float_pixels(nan=True))
    before = _runs(store_with_a_run)
    out = subprocess.run([sys.executable, "-m", "benchmark.run", "-m", "hydra/launcher=parallel",
                          "hydra.launcher.n_jobs=2", "debug=tiny", "model=lenet300", "threat=fgsm", *NPZ,
                          f"dataset.path={path}", "pruning.sparsity=0.5,0.7,0.9", f"results_dir={store_with_a_run}"],
                         cwd=ROOT, env=cli_env(), capture_output=True, text=True, timeout=300)
    text = out.stdout + out.stderr
    assert out.returncode == 2, text[-3000:]
    assert "grid rejected before any cell ran: 3 bad cell(s)" in text and "Traceback" not in text
    assert text.count("x_train has NaN or infinite pixel values") == 3, text[-3000:]
    assert _runs(store_with_a_run) == before, "no run: not the grid's parent, not a FAILED cell"
