"""What makes two cells, or two cached models, the same computation: the key chain's code identity, value
normalisation, the device type, and the roles of a cell's training data."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from attacks import build_threat
from benchmark import hashing, stages, version
from benchmark.cache import ModelCache
from benchmark.cell import prepare, run_cell
from benchmark.data import load_dataset
from benchmark.inputs import defender_count, split_sizes

CPU = torch.device("cpu")
QUICK = ("dataset.eps=[0.1]", "threat.subset=50", "eval=fast")


def _keys(cfg):
    dense = hashing.dense_key(cfg, None)
    return hashing.cell_hash(cfg), dense, hashing.pruned_key(dense, cfg)


def test_results_version_and_library_versions_enter_every_key(cfg_factory, monkeypatch):
    cfg = cfg_factory()
    before = _keys(cfg)
    identity = version.code_identity()
    assert identity["results_version"] == version.RESULTS_VERSION
    assert set(version.COMPUTE_PACKAGES) <= set(identity)
    assert {"torch", "torchvision", "torch-pruning", "adversarial-robustness-toolbox", "numpy", "scikit-learn",
            "mlxtend", "captum"} <= set(version.COMPUTE_PACKAGES)
    for change in ({"results_version": version.RESULTS_VERSION + 1},
                   *({package: "0.0.0"} for package in version.COMPUTE_PACKAGES)):
        monkeypatch.setattr(hashing, "code_identity", lambda: {**identity, **change})
        after = _keys(cfg)
        assert all(a != b for a, b in zip(before, after)), change


def test_one_computation_has_one_hash(cfg_factory):
    assert _keys(cfg_factory("pruning.sparsity=0")) == _keys(cfg_factory("pruning.sparsity=0.0"))
    assert _keys(cfg_factory("pruning.sparsity=0.5")) != _keys(cfg_factory("pruning.sparsity=0.6"))
    n_train, n_test = split_sizes(cfg_factory().dataset)
    n_train -= defender_count(n_train, None)  # what training keeps: the defender split is held out
    clamped = cfg_factory(f"threat.subset={n_test + 1000}", f"eval.train_subset={n_train + 5}")
    exact = cfg_factory(f"threat.subset={n_test}", f"eval.train_subset={n_train}")
    assert prepare(clamped)[0] == prepare(exact)[0]
    assert clamped.threat.subset == n_test and clamped.eval.train_subset == n_train  # what config.yaml shows
    assert prepare(cfg_factory(f"threat.subset={n_test - 1}"))[0] != prepare(exact)[0]


@pytest.mark.parametrize("name", ["digits", "mnist5k"])
def test_split_sizes_match_the_loaded_splits(cfg_factory, name):
    cfg = cfg_factory(f"dataset={name}").dataset
    data = load_dataset(cfg, seed=0)
    assert split_sizes(cfg) == (len(data.y_train), len(data.y_test))


def test_cpu_and_cuda_cells_are_different_computations(cfg_factory):
    cpu, cuda = cfg_factory("device=cpu"), cfg_factory("device=cuda")
    assert all(a != b for a, b in zip(_keys(cpu), _keys(cuda)))
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert _keys(cfg_factory("device=auto")) == _keys(cfg_factory(f"device={expected}"))
    # truly run-only keys do not change the identity
    assert _keys(cpu) == _keys(cfg_factory("device=cpu", "force=true", "experiment_name=x", "torch_threads=1"))


def test_cache_entries_and_runs_name_the_commit_that_produced_them(cfg_factory, tmp_path):
    result = run_cell(cfg_factory("pruning.sparsity=0.5", *QUICK))
    run = MlflowClient().get_run(result.run_id)
    commit = version.producing_commit()
    assert run.data.tags["produced_by_commit"] == commit == run.data.tags["produced_by_commit.dense"]
    assert run.data.tags["git_commit"] == version.git_state()[0]
    assert run.data.tags["results_version"] == str(version.RESULTS_VERSION)
    cache = ModelCache(tmp_path / "cache")
    assert cache.load("dense", run.data.tags["dense_key"])[1]["produced_by_commit"] == commit
    assert cache.load("pruned", run.data.tags["pruned_key"])[1]["produced_by_commit"] == commit


# ---------------------------------------------------------------- the roles of a cell's training data

@pytest.mark.parametrize("stage,finetune,expected", [
    ("poison_then_prune", "clean", ("poisoned", "clean", "clean", "clean")),
    ("poison_then_prune", "poisoned", ("poisoned", "clean", "poisoned", "poisoned")),
    ("prune_then_poison", "poisoned", ("clean", "clean", "clean", "poisoned")),
])
def test_each_stage_gets_the_data_of_its_role(cfg_factory, digits, stage, finetune, expected):
    cfg = cfg_factory("threat=badnets", f"threat.stage={stage}", f"threat.finetune_data={finetune}")
    threat = build_threat(cfg.threat)
    sets = threat.plan(digits, CPU, cfg.seed).sets
    roles = sets.roles(digits)
    assert tuple(roles[f"data.{r}"] for r in ("dense", "calibration", "pruning_finetune", "finetune")) == expected
    ctx = stages.prune_context(cfg, sets, CPU)
    x, y = ctx.calibration  # importance scores always see clean images and labels
    idx = [int((digits.x_train == row).flatten(1).all(1).nonzero()[0]) for row in x[:20]]
    assert torch.equal(digits.y_train[idx], y[:20])


def test_snip_under_poison_then_prune_retrains_on_the_poisoned_set(cfg_factory, tmp_path):
    """SNIP trains the pruned network from init on what the dense model was trained on: with a clean fine-tune
    set, the backdoored cell's model must not be the clean model's."""
    overrides = ("threat=badnets", "threat.stage=poison_then_prune", "threat.finetune_data=clean", "pruning=snip",
                 "pruning.sparsity=0.5", "train.epochs=2", "eval=fast", "threat.subset=50")
    result = run_cell(cfg_factory(*overrides))
    run = MlflowClient().get_run(result.run_id)
    assert run.data.tags["data.dense"] == "poisoned" and run.data.tags["data.finetune"] == "clean"
    cache = ModelCache(tmp_path / "cache")
    poisoned_state = cache.load("pruned", run.data.tags["pruned_key"])[0]
    clean_cfg = cfg_factory(*overrides)
    clean_key = hashing.pruned_key(hashing.dense_key(clean_cfg, None), clean_cfg)
    clean_state = cache.load("pruned", clean_key)[0]  # the clean reference, built by the same cell
    assert not any(torch.equal(poisoned_state[k], clean_state[k]) for k in poisoned_state if k.endswith("weight"))


def test_a_builtin_datasets_file_content_enters_every_key(cfg_factory, tmp_path, monkeypatch):
    """A library upgrade that ships other images under the same dataset name makes new keys, while a copy of the
    same file elsewhere keeps them."""
    from benchmark import inputs

    shipped = inputs.package_file("sklearn", "datasets/data/digits.csv.gz")
    copy, edited = tmp_path / "copy.csv.gz", tmp_path / "edited.csv.gz"
    copy.write_bytes(shipped.read_bytes())
    edited.write_bytes(shipped.read_bytes() + b"\0")
    cfg = cfg_factory()
    before = _keys(cfg)
    monkeypatch.setattr(inputs, "package_file", lambda *_: copy)
    assert _keys(cfg) == before
    monkeypatch.setattr(inputs, "package_file", lambda *_: edited)
    assert all(a != b for a, b in zip(before, _keys(cfg)))


def test_torchvision_files_under_data_root_enter_every_key(cfg_factory, tmp_path):
    from benchmark.datasets import DATASETS

    def data_root(name: str, extra: bytes = b"") -> Path:
        root = tmp_path / name
        for i, relative in enumerate(DATASETS["mnist"].files):
            (root / relative).parent.mkdir(parents=True, exist_ok=True)
            (root / relative).write_bytes(bytes([i]) * 64 + (extra if i == 0 else b""))
        return root

    def keys(root: Path):
        return _keys(cfg_factory("dataset=mnist", f"dataset.data_root={root}", "model=seed_cnn",
                                 "dataset.n_train=100", "dataset.n_test=50"))

    original = keys(data_root("a"))
    assert keys(data_root("b")) == original  # the same files elsewhere: data_root is where, not what
    assert all(a != b for a, b in zip(original, keys(data_root("c", extra=b"\1"))))


def test_a_rate_written_two_ways_is_one_setting(cfg_factory):
    """The poisoning threats' names carry the rate: `r=0` and `r=0.0` must not split one setting in two."""
    whole = cfg_factory("threat=badnets", "threat.poison_rate=0")
    written_as_float = cfg_factory("threat=badnets", "threat.poison_rate=0.0")
    assert prepare(whole)[0] == prepare(written_as_float)[0]
    assert whole.threat.name == written_as_float.threat.name


def test_fine_pruning_with_a_channel_fraction_is_one_cell_per_fraction(cfg_factory):
    """With `channel_fraction` set the swept sparsity changes nothing: one cell, not one per sparsity."""
    def cell(*overrides):
        return prepare(cfg_factory("model=seed_cnn", "pruning=fine_pruning", *overrides))[0]

    assert cell("pruning.channel_fraction=0.5", "pruning.sparsity=0.5") == \
        cell("pruning.channel_fraction=0.5", "pruning.sparsity=0.9")
    assert cell("pruning.sparsity=0.5") != cell("pruning.sparsity=0.9")


def test_threshold_is_one_cell_per_rate_named_by_its_rate_never_by_a_sparsity(cfg_factory):
    """threshold's amount is its rate: a swept sparsity sets the rate (`rate: ${.sparsity}`), then the sparsity is
    normalised to 0, so one rate is one cell however it was set, and the run name says `rate=`, not `s=`."""
    swept, explicit = cfg_factory("pruning=threshold", "pruning.sparsity=0.7"), cfg_factory(
        "pruning=threshold", "pruning.rate=0.7", "pruning.sparsity=0.2")
    (swept_hash, swept_name), (explicit_hash, explicit_name) = prepare(swept), prepare(explicit)
    assert swept_hash == explicit_hash and swept_name == explicit_name
    assert "|threshold|rate=0.7|" in swept_name and "s=" not in swept_name
    assert (swept.pruning.rate, swept.pruning.sparsity) == (0.7, 0)
    assert prepare(cfg_factory("pruning=threshold", "pruning.sparsity=0.5"))[0] != swept_hash
