"""Re-running a finished grid: the grid hashes its cells without torch, looks them up once, and does not launch the
jobs whose cell is FINISHED (no validation, no store set-up, no Hydra job of their own)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

import tiny_store
from benchmark.cell import prepare
from benchmark.grid import SAME_CELL_FILE, SKIPS_FILE, Job, JobComposer, jobs_to_skip, same_cell_jobs
from benchmark.hashing import GPU_DEVICE_FILES
from conftest import CONF_DIR, make_cfg, write_images, write_npz
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from hydra_plugins.prunesec_grid_sweeper import runs_to_launch

ROOT = Path(__file__).resolve().parents[1]


def test_a_rerun_skips_every_finished_job_from_one_lookup(store):
    _, ledger = tiny_store.run_grid(store.results, "sweep-skip")
    sweep = store.results / "sweep-skip"
    skips = json.loads((sweep / SKIPS_FILE).read_text())
    assert sorted(int(num) for num in skips) == list(range(tiny_store.N_JOBS))
    assert sorted(c["num"] for c in ledger if c["status"] == "skipped") == list(range(tiny_store.N_JOBS))
    first = {c["num"]: c["run_id"] for c in store.ledger}
    assert {c["num"]: c["run_id"] for c in ledger} == first  # each job points at the run that finished its cell
    assert not [p.name for p in sweep.iterdir() if p.is_dir()]  # no job was launched (Hydra makes one folder each)


def test_forced_and_unfinished_cells_are_not_skipped():
    def job(num, cell_hash, force):
        return Job(num, [], make_cfg("unused", f"force={str(force).lower()}"), cell_hash)

    finished = {"a" * 16: ("run-a", "name-a")}
    jobs = [job(0, "a" * 16, False), job(1, "a" * 16, True), job(2, "0" * 16, False), job(3, "a" * 16, False)]
    assert jobs_to_skip(jobs, finished) == {num: {"cell_hash": "a" * 16, "run": "name-a", "run_id": "run-a"}
                                            for num in ("0", "3")}


def test_a_job_whose_cell_an_earlier_job_computes_is_skipped_without_waiting_for_it():
    def job(num, cell_hash):
        return Job(num, [], None, cell_hash)

    jobs = [job(0, "a"), job(1, "a"), job(2, "b"), job(3, "a"), job(4, "b"), job(5, "c")]
    assert same_cell_jobs(jobs, skips={}) == {"1": 0, "3": 0, "4": 2}
    assert same_cell_jobs(jobs, skips={"0": {}, "1": {}, "3": {}}) == {"4": 2}  # finished before: skipped as such


def test_pruning_none_at_two_sparsities_is_one_cell_computed_once_in_a_grid(tmp_path):
    done = tiny_store.run_cli("debug=tiny", "eval=fast", "model=lenet300", "train.epochs=1", "threat=fgsm",
                              "threat.subset=20", "pruning=none", "pruning.sparsity=0.5,0.9",
                              f"results_dir={tmp_path}", f"hydra.sweep.dir={tmp_path / 'sweep'}")
    assert json.loads((tmp_path / "sweep" / SAME_CELL_FILE).read_text()) == {"1": 0}
    ledger = {c["num"]: c for c in map(json.loads, (tmp_path / "sweep" / "cells.jsonl").read_text().splitlines())}
    assert ledger[0]["status"] == "finished" and ledger[1]["status"] == "skipped" and ledger[1]["run_id"] is None
    said = done.stdout + done.stderr
    assert "[cell 2/2] " in said and "the same cell as [cell 1/2], which computes it; skipped" in said
    assert "grid done: 1 finished, 1 skipped" in said


def test_jobs_to_launch_keep_their_numbers_in_runs_of_consecutive_jobs():
    assert runs_to_launch(6, set(), None) == [range(0, 6)]
    assert runs_to_launch(6, {0, 1, 2, 3, 4, 5}, None) == []
    assert runs_to_launch(7, {1, 4, 5}, None) == [range(0, 1), range(2, 4), range(6, 7)]
    assert runs_to_launch(7, {1}, 3) == [range(0, 1), range(2, 5), range(5, 7)]  # Hydra's max_batch_size


def test_the_grid_composes_each_job_as_hydra_does_once_per_choice_of_groups(monkeypatch):
    import hydra

    jobs = [["experiment=default", "model=lenet300", "pruning=magnitude_global", "pruning.sparsity=0.9", "seed=1"],
            ["experiment=default", "model=lenet300", "pruning=magnitude_global", "pruning.sparsity=0.5", "seed=2"],
            ["pruning.sparsity=0.3", "pruning=random", "dataset=digits"],  # a value before its group
            ["dataset=digits", "threat=badnets", "threat.poison_rate=0.2", "+pruning.reinit=true", "pruning=l1_filter"],
            ["~eval.collapse_margin", "model=seed_cnn", "train={epochs: 2, lr: 0.01}", "threat.eps=[0.1]"],
            ["pruning=no_such_method"], ["pruning.no_such_key=1"]]
    composed = []
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        expected = []
        for overrides in jobs:
            try:
                expected.append(OmegaConf.to_container(compose(config_name="config", overrides=overrides)))
            except Exception as err:  # noqa: BLE001
                expected.append(type(err))
        hydra_compose = hydra.compose
        monkeypatch.setattr(hydra, "compose", lambda **kw: composed.append(kw["overrides"]) or hydra_compose(**kw))
        composer = JobComposer("config")
        for overrides, want in zip(jobs, expected):
            try:
                got = OmegaConf.to_container(composer.compose(overrides))
            except Exception as err:  # noqa: BLE001
                got = type(err)
            assert got == want, overrides
    assert composed[0] == ["experiment=default", "model=lenet300", "pruning=magnitude_global"]
    assert len(composed) == len(jobs) - 1  # the first two jobs choose the same groups


_TORCH_FREE_HASHES = """
import json, sys
from hydra import compose, initialize_config_dir
from benchmark.grid import identify
cases = json.loads(sys.argv[2])
with initialize_config_dir(config_dir=sys.argv[1], version_base="1.3"):
    hashes = {name: identify(compose(config_name="config", overrides=overrides)) for name, overrides in cases.items()}
print(json.dumps({"hashes": hashes, "torch_imported": "torch" in sys.modules}))
"""


def _torch_free_hashes(cases: dict[str, list[str]]) -> dict:
    done = subprocess.run([sys.executable, "-c", _TORCH_FREE_HASHES, CONF_DIR, json.dumps(cases)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.splitlines()[-1])


def _prepared_hash(overrides: list[str]) -> str:
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return prepare(compose(config_name="config", overrides=overrides))[0]


def _checkpoint(path: Path) -> Path:
    from safetensors.torch import save_file

    from models import build_model

    cfg = make_cfg("unused")
    torch.manual_seed(0)
    model = build_model("seed_cnn", cfg.dataset.in_channels, cfg.dataset.image_size, cfg.dataset.num_classes)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)
    return path


def test_the_grid_hashes_cells_without_torch_exactly_as_a_cell_does(tmp_path):
    npz = write_npz(tmp_path / "data.npz", n_train=40, n_test=20, classes=4, side=16, channels=1)
    write_images(tmp_path / "folder", {"a": 5, "b": 5}, size=(16, 16), mode="L")
    base = ["debug=tiny", f"results_dir={tmp_path}"]
    cases = {
        "evasion": ["dataset=digits", "threat=evasion", "dataset.eps=[0.05,0.1]"],
        "dense_baseline": ["dataset=digits", "pruning=none", "pruning.sparsity=0.7"],  # canonical: sparsity 0
        "badnets": ["dataset=digits", "threat=badnets", "pruning=l1_filter"],
        "prune_then_poison": ["dataset=digits", "threat=label_flip", "threat.stage=prune_then_poison"],
        "subsets_beyond_split": ["dataset=mnist5k", "threat=evasion", "threat.subset=100000",
                                 "eval.train_subset=100000", "eval.corruptions.subset=100000",
                                 "eval.interpret.subset=100000"],
        "npz": ["dataset=npz", f"dataset.path={npz}", "threat.subset=1000"],
        "checkpoint": ["dataset=digits", f"model.checkpoint={_checkpoint(tmp_path / 'seed_cnn.safetensors')}",
                       "pruning=taylor"],
    }
    others = {"image_folder": [*base, "dataset=image_folder", f"dataset.root={tmp_path / 'folder'}",
                               "dataset.test_size=0.4", "threat.subset=1000"]}  # torchvision counts its images
    # device=auto: torch is asked only where a GPU driver's device file exists
    gpu_driver = any(os.path.exists(path) for path in GPU_DEVICE_FILES)
    (others if gpu_driver else cases)["device_auto"] = ["dataset=digits", "device=auto"]
    cases = {name: [*base, *overrides] for name, overrides in cases.items()}
    torch_free = _torch_free_hashes(cases)
    assert not torch_free["torch_imported"]
    for name, overrides in cases.items():
        assert torch_free["hashes"][name] == _prepared_hash(overrides), name
    assert len(set(torch_free["hashes"].values())) == len(cases)
    others = {name: [*base, *overrides] for name, overrides in others.items()}
    for name, hashed in _torch_free_hashes(others)["hashes"].items():
        assert hashed == _prepared_hash(others[name]), name


def test_a_grid_showing_the_same_cells_copies_the_figures_instead_of_drawing_them(monkeypatch, store):
    import mlflow

    from benchmark import grid_figures

    mlflow.set_tracking_uri(store.uri)
    client = MlflowClient()
    # parent runs of their own experiment, so that the shared store's grid experiment keeps only real grids
    experiment_id = client.create_experiment("figure-copies", artifact_location=(store.results / "copies").as_uri())
    tags = {"grid": "true", "git_commit": "c" * 40, "git_dirty": "false"}
    first, second, dirty = (client.create_run(experiment_id, tags={**tags, **extra}).info.run_id
                            for extra in ({}, {}, {"git_dirty": "true"}))
    cells = [{**cell, "status": "skipped"} for cell in store.ledger]
    grid_figures.log_grid_artifacts(store.uri, store.experiment, first, cells)
    drawn = sorted(a.path for d in ("figures", "tables") for a in client.list_artifacts(first, d))
    assert drawn and client.get_run(first).data.tags[grid_figures.GRID_CELLS_TAG]

    def no_drawing(*args):
        raise AssertionError("drawn again")

    monkeypatch.setattr(grid_figures, "_draw_grid_artifacts", no_drawing)
    grid_figures.log_grid_artifacts(store.uri, store.experiment, second, cells)
    assert sorted(a.path for d in ("figures", "tables") for a in client.list_artifacts(second, d)) == drawn
    with pytest.raises(AssertionError, match="drawn again"):  # a dirty checkout may draw differently
        grid_figures.log_grid_artifacts(store.uri, store.experiment, dirty, cells)
    with pytest.raises(AssertionError, match="drawn again"):  # other cells
        grid_figures.log_grid_artifacts(store.uri, store.experiment, second, cells[:-1])
