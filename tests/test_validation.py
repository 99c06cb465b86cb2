"""Bad input fails before any compute, naming the key, the value and what is allowed (issues 2 and 7)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch.nn as nn
from hydra.errors import MissingConfigException

import benchmark.cell
import benchmark.stages
import models
from benchmark.cell import run_cell
from benchmark.validate import ConfigError

from conftest import make_cfg

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def no_compute(monkeypatch):
    """Any data loading or training fails the test: validation must stop a bad cell first."""
    def forbidden(*args, **kwargs):
        raise AssertionError("compute started before validation rejected the config")

    monkeypatch.setattr(benchmark.cell, "load_dataset", forbidden)
    monkeypatch.setattr(benchmark.stages, "fit", forbidden)


# (overrides, what the message must contain: key=value and the allowed values or range)
BAD = [
    (["dataset.name=imagenet"], ["dataset.name='imagenet'", "allowed:", "'mnist5k'", "'digits'"]),
    (["model.name=resnet50"], ["model.name='resnet50'", "'seed_cnn'", "'resnet20'"]),
    (["pruning.method=sparsegpt"], ["pruning.method='sparsegpt'", "'magnitude_global'", "'l1_filter'"]),
    (["threat.kind=telepathy"], ["threat.kind='telepathy'", "'evasion'"]),
    (["threat.attacks.0.name=cw"], ["threat.attacks[0].name='cw'", "'pgd_linf'", "'fgsm'"]),
    (["device=tpu"], ["device='tpu'", "'cpu'", "'cuda'", "'auto'"]),
    (["pruning.sparsity=1.0"], ["pruning.sparsity=1.0", "0.0 <= sparsity < 1.0"]),
    (["pruning.sparsity=1.5"], ["pruning.sparsity=1.5", "0.0 <= sparsity < 1.0"]),
    (["pruning.sparsity=-0.1"], ["pruning.sparsity=-0.1", "0.0 <= sparsity < 1.0"]),
    (["pruning.sparsity=half"], ["pruning.sparsity='half'", "0.0 <= sparsity < 1.0"]),
    (["pruning=threshold", "pruning.rate=1.2"], ["pruning.rate=1.2", "0.0 <= rate <= 1.0"]),
    (["dataset.eps=[0.1,-0.05]"], ["threat.eps[1]=-0.05", "0.0 <= eps[1] <= 1.0"]),
    (["train.epochs=-1"], ["train.epochs=-1", "0 <= epochs <= 10000"]),
    (["finetune.epochs=-2"], ["finetune.epochs=-2", "0 <= epochs"]),
    (["train.lr=0"], ["train.lr=0", "<= lr <= 10.0"]),
    (["finetune.batch_size=0"], ["finetune.batch_size=0", "1 <= batch_size"]),
    (["seed=-1"], ["seed=-1", "0 <= seed <= 4294967295"]),
    (["threat.subset=0"], ["threat.subset=0", "1 <= subset"]),
    (["threat.attacks.0.max_iter=0"], ["threat.attacks[0].max_iter=0", "1 <= max_iter"]),
    (["threat.attacks.0.batch_size=-5"], ["threat.attacks[0].batch_size=-5", "1 <= batch_size"]),
    (["threat.attacks.0.step_fraction=0"], ["threat.attacks[0].step_fraction=0", "<= step_fraction <= 10.0"]),
    (["+threat.poison_rate=1.5"], ["threat.poison_rate=1.5", "0.0 <= poison_rate <= 1.0"]),
    (["torch_threads=0"], ["torch_threads=0", "1 <= torch_threads"]),
    (["eval.train_subset=0"], ["eval.train_subset=0", "1 <= train_subset"]),
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
    """0 sparsity, eps 0 and 0 epochs are legal (the dense point, the clean point, no fine-tuning)."""
    cfg = make_cfg(tmp_path, "pruning.sparsity=0.0", "dataset.eps=[0.0,1.0]", "finetune.epochs=0", "torch_threads=1")
    benchmark.cell.prepare(cfg)


def test_unknown_config_group_option_is_rejected_by_hydra_with_the_options():
    with pytest.raises(MissingConfigException) as err:
        make_cfg("unused", "model=resnet50")
    assert "model/resnet50" in str(err.value) and "seed_cnn" in str(err.value)


def test_misspelt_key_is_rejected_by_hydra():
    with pytest.raises(Exception, match="sparsty"):
        make_cfg("unused", "pruning.sparsty=0.5")


def test_structured_method_on_a_model_without_prunable_channels(tmp_path, monkeypatch, no_compute):
    # a logistic regression: its only layer is the classifier head, which structured pruning must keep
    monkeypatch.setitem(models.MODELS, "logreg", lambda c, s, n: nn.Sequential(nn.Flatten(), nn.Linear(c * s * s, n)))
    with pytest.raises(ConfigError, match=r"pruning.method='l1_filter' is structured but model.name='logreg'"):
        run_cell(make_cfg(tmp_path, "pruning=l1_filter", "model.name=logreg"))
    benchmark.cell.prepare(make_cfg(tmp_path, "pruning=magnitude_global", "model.name=logreg"))  # unstructured: fine


def _cli(tmp_path, *args):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "0"}
    return subprocess.run([sys.executable, "-m", "benchmark.run", *args, "dataset=digits", "device=cpu",
                           f"results_dir={tmp_path}"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_cli_bad_cell_exits_2_with_the_message_and_no_traceback(tmp_path):
    out = _cli(tmp_path, "pruning.sparsity=1.5")
    assert out.returncode == 2, out.stderr[-2000:]
    text = out.stdout + out.stderr
    assert "pruning.sparsity=1.5 is out of range; allowed: 0.0 <= sparsity < 1.0" in text
    assert "Traceback" not in text
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "cache").exists()


def test_cli_grid_with_one_bad_cell_is_rejected_before_any_cell_runs(tmp_path):
    out = _cli(tmp_path, "-m", "pruning=magnitude_global,random", "pruning.sparsity=0.5,1.5", "train.epochs=1")
    text = out.stdout + out.stderr
    assert out.returncode == 2, text[-2000:]
    assert "grid rejected before any cell ran: 2 bad cell(s)" in text
    assert "cell pruning=random pruning.sparsity=1.5: pruning.sparsity=1.5 is out of range" in text
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "cache").exists()  # nothing ran
    assert "Traceback" not in text


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
