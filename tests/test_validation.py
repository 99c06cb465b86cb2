"""Bad input fails before any compute, naming the key, the value and what is allowed."""
from __future__ import annotations

from pathlib import Path

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

    monkeypatch.setattr(benchmark.cell, "load_dataset", forbidden)
    monkeypatch.setattr(benchmark.stages, "fit", forbidden)


# (overrides, what the message must contain: key=value and the allowed values or range)
BAD = [
    (["dataset.name=imagenet"], ["dataset.name='imagenet'", "allowed:", "mnist5k", "digits"]),
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
