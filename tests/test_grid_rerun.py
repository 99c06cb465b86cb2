"""Re-running a finished grid: the grid looks its cells up once, and each job whose cell is FINISHED is skipped
before any per-job work (no validation, no store set-up, no query of its own)."""
from __future__ import annotations

import json

from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

import tiny_store
from benchmark.grid import SKIPS_FILE, _write_skips


def test_a_rerun_skips_every_finished_job_from_one_lookup(store):
    _, ledger = tiny_store.run_grid(store.results, "sweep-skip")
    skips = json.loads((store.results / "sweep-skip" / SKIPS_FILE).read_text())
    assert sorted(int(num) for num in skips) == list(range(tiny_store.N_JOBS))
    assert sorted(c["num"] for c in ledger if c["status"] == "skipped") == list(range(tiny_store.N_JOBS))
    first = {c["num"]: c["run_id"] for c in store.ledger}
    assert {c["num"]: c["run_id"] for c in ledger} == first  # each job points at the run that finished its cell


def test_forced_and_unfinished_cells_are_not_skipped(store, tmp_path):
    finished = store.ledger[0]
    experiment_id = MlflowClient(store.uri).get_experiment_by_name(store.experiment).experiment_id
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path / "sweep")}}})
    cells = [(finished["cell_hash"], finished["run"], False), (finished["cell_hash"], finished["run"], True),
             ("0" * 16, "never ran", False)]
    import mlflow

    mlflow.set_tracking_uri(store.uri)
    assert _write_skips(config, experiment_id, cells) == 1
    assert json.loads((tmp_path / "sweep" / SKIPS_FILE).read_text()) == {
        "0": {"cell_hash": finished["cell_hash"], "run": finished["run"], "run_id": finished["run_id"]}}
