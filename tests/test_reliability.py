"""Reliability: the model cache under corruption and concurrent writers, parallel MLflow logging into
one SQLite file, an interrupted grid re-run to completion, and seeded determinism."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import mlflow
import pytest
import torch
from mlflow.tracking import MlflowClient

from benchmark import hashing, stages, tracking, tracking_store
from benchmark.cache import ModelCache
from benchmark.cell import run_cell
from conftest import ROOT, cli_env, make_cfg

CPU = torch.device("cpu")
ENV = cli_env()
# These tests are about bookkeeping, not numbers: one PGD budget on 50 images, no optional evaluations
# (`++`: still composes if another area renames its keys).
QUICK = ("dataset.eps=[0.1]", "threat.subset=50", "eval=fast")


def _python(code: str, *args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *map(str, args)], cwd=ROOT, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


# ---------------------------------------------------------------- cache

def test_cache_detects_corruption_deletes_and_reports_it(tmp_path, caplog):
    cache = ModelCache(tmp_path)
    state = {"w": torch.arange(1000, dtype=torch.float32), "n": torch.tensor(7)}
    path = cache.save("dense", "k1", state, {"epochs": 3})
    loaded, meta = cache.load("dense", "k1")
    assert torch.equal(loaded["w"], state["w"]) and torch.equal(loaded["n"], state["n"]) and meta == {"epochs": 3}

    good = path.read_bytes()
    path.write_bytes(good[:-7] + bytes([good[-7] ^ 0xFF]) + good[-6:])  # still a valid file, one wrong number
    assert cache.load("dense", "k1") is None
    assert "corrupted" in caplog.text and "sha256 mismatch" in caplog.text
    assert not path.exists()  # deleted, so the caller rebuilds it

    for broken in (good[: len(good) // 2], b"\x00" * 10, b""):  # truncated by a full disk or a crash
        path.write_bytes(broken)
        assert cache.load("dense", "k1") is None and not path.exists()
    assert cache.load("dense", "absent") is None
    assert list((tmp_path / "dense").iterdir()) == []


def test_corrupted_dense_model_is_rebuilt_identically_by_the_next_cell(tmp_path):
    first = run_cell(make_cfg(tmp_path, "train.epochs=2", "pruning.sparsity=0.5", *QUICK))
    [entry] = (tmp_path / "cache" / "dense").glob("*.safetensors")
    good, _ = ModelCache(tmp_path / "cache").load("dense", entry.stem)
    good = entry.read_bytes(), good
    entry.write_bytes(good[0][:-4] + b"\x00\x00\x80\x7f")  # the last weight becomes +inf: silent damage
    second = run_cell(make_cfg(tmp_path, "train.epochs=2", "pruning.sparsity=0.8", *QUICK))
    assert second.metrics["cache/dense_hit"] == 0.0  # not trusted: retrained
    rebuilt, _ = ModelCache(tmp_path / "cache").load("dense", entry.stem)
    assert all(torch.equal(rebuilt[k], good[1][k]) for k in rebuilt)  # bit-identical weights (seeded CPU training)
    assert second.metrics["dense/acc"] == first.metrics["dense/acc"]


def test_entry_replaced_during_a_load_still_loads_as_the_entry_that_was_opened(tmp_path, monkeypatch, caplog):
    """A writer renaming a fresh entry over the path while a reader parses it (deterministic version of the race
    that safetensors' safe_open lost: it reopens the path for the tensors, pairing two writers' header and data)."""
    from benchmark import cache as cache_module
    cache = ModelCache(tmp_path)
    cache.save("dense", "k", {"w": torch.full((8,), 1.0)}, {"v": 1.0})
    parse = cache_module.load_tensors

    def replaced_meanwhile(data):
        ModelCache(tmp_path).save("dense", "k", {"w": torch.full((8,), 2.0)}, {"v": 2.0})  # atomic rename
        return parse(data)

    monkeypatch.setattr(cache_module, "load_tensors", replaced_meanwhile)
    state, meta = cache.load("dense", "k")
    assert meta == {"v": 1.0} and torch.equal(state["w"], torch.full((8,), 1.0))  # the opened entry, whole
    assert "corrupted" not in caplog.text
    monkeypatch.undo()
    state, meta = cache.load("dense", "k")
    assert meta == {"v": 2.0} and torch.equal(state["w"], torch.full((8,), 2.0))  # the next load sees the new one


WRITER = """
import sys, torch
from benchmark.cache import ModelCache
cache, value = ModelCache(sys.argv[1]), float(sys.argv[2])
for _ in range(12):
    cache.save("dense", "same-key", {"w": torch.full((512, 512), value), "b": torch.full((512,), value)}, {"v": value})
"""


def test_concurrent_writers_of_one_key_never_serve_a_torn_entry(tmp_path, caplog):
    """Two processes keep rewriting one key with different contents while this one reads it: every load is
    one writer's complete entry (or None before the first write), and no writer crashes."""
    writers = [_python(WRITER, tmp_path, value) for value in (1.0, 2.0)]
    cache, served, missed = ModelCache(tmp_path), [], 0
    while any(w.poll() is None for w in writers):
        time.sleep(0.01)  # leave the two cores to the writers
        hit = cache.load("dense", "same-key")
        if hit is None:
            missed += 1
            continue
        assert hit[1] == {"v": hit[0]["b"][0].item()}  # metadata and tensors from the same writer
        state, meta = hit
        values = {state["w"].min().item(), state["w"].max().item(), state["b"].min().item(), state["b"].max().item()}
        assert len(values) == 1 and values <= {1.0, 2.0}, values  # one writer's entry, never a mix
        served.append(values.pop())
    assert [w.wait() for w in writers] == [0, 0], [w.stderr.read() for w in writers]
    assert served, "the reader never saw a complete entry"
    assert "corrupted" not in caplog.text  # one file per entry: a reader never sees a mixed or partial entry
    leftovers = [p.name for p in (tmp_path / "dense").iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []  # temp files are renamed or removed


# ---------------------------------------------------------------- MLflow + SQLite

LOGGER = """
import sys, mlflow
from benchmark import tracking
uri, worker, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
experiment = tracking.setup_experiment(uri, "parallel", sys.argv[4])
for i in range(n):
    with tracking.cell_run(experiment, f"w{worker}-{i}", {"cell_hash": f"{worker}-{i}"}, sys.argv[5]):
        mlflow.log_params({f"p{k}": k for k in range(30)})
        mlflow.log_metrics({f"m/{k}": worker + i + k / 100 for k in range(40)})
        mlflow.log_text("config", "config.yaml")
"""


def test_parallel_workers_logging_into_one_sqlite_file_lose_no_runs(tmp_path):
    """What a joblib grid does: the parent creates the store and a parent run first (GridCallback), then N
    processes each log runs concurrently. MLflow's SQLite busy timeout serialises the writers."""
    from benchmark import tracking

    uri = tracking_store.default_tracking_uri(tmp_path)
    experiment = tracking.setup_experiment(uri, "parallel", tmp_path / "art")
    parent = MlflowClient().create_run(experiment).info.run_id
    workers, per_worker = 3, 10
    procs = [_python(LOGGER, uri, w, per_worker, tmp_path / "art", parent) for w in range(workers)]
    results = [(p.wait(timeout=240), p.stderr.read()) for p in procs]
    assert all(rc == 0 for rc, _ in results), [err[-1500:] for _, err in results]
    assert not any("database is locked" in err for _, err in results)
    runs = mlflow.search_runs([experiment], filter_string=f"tags.mlflow.parentRunId = '{parent}'",
                              max_results=1000, output_format="list")
    assert len(runs) == workers * per_worker
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert len({r.data.tags["cell_hash"] for r in runs}) == workers * per_worker
    assert all(len(r.data.metrics) == 40 and len(r.data.params) == 30 for r in runs)


# ---------------------------------------------------------------- interrupted grid

GRID = ["debug=tiny", "train.epochs=2", *QUICK,
        "pruning=none,magnitude_global,random", "pruning.sparsity=0.5,0.9"]  # 6 jobs, 5 cells (none runs once)


def _grid(results: Path, sweep: str, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "benchmark.run", "-m", *GRID, f"results_dir={results}",
                             f"hydra.sweep.dir={results / sweep}", *extra], cwd=ROOT, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def _finished_in(ledger: Path) -> int:
    if not ledger.exists():
        return 0
    return sum(json.loads(line)["status"] == "finished" for line in ledger.read_text().splitlines() if line.strip())


@pytest.mark.parametrize("signals", [
    pytest.param((signal.SIGKILL,), id="kill"),
    pytest.param((signal.SIGKILL, signal.SIGTERM, signal.SIGINT), id="kill-term-int", marks=pytest.mark.slow),
])
def test_interrupted_grid_reruns_to_exactly_one_finished_run_per_cell(tmp_path, signals):
    """Kill a sequential grid right after one more cell finished (one grid per signal), then re-run it with two
    joblib workers: every cell ends with exactly one FINISHED run, the cache verifies, nothing is half-written.
    (SIGTERM, like SIGKILL, leaves the cell's run RUNNING; SIGINT ends it KILLED: neither counts as finished.)"""
    for i, sig in enumerate(signals):
        proc = _grid(tmp_path, f"sweep{i}")
        deadline = time.time() + 120
        while _finished_in(tmp_path / f"sweep{i}" / "cells.jsonl") < 1 and proc.poll() is None:
            assert time.time() < deadline, "grid made no progress"
            time.sleep(0.05)
        os.killpg(proc.pid, sig)
        proc.wait(timeout=60)
    final = _grid(tmp_path, "final", "hydra/launcher=parallel", "hydra.launcher.n_jobs=2")
    out, _ = final.communicate(timeout=240)
    assert final.returncode == 0, out[-3000:]
    assert "0 failed" in out

    mlflow.set_tracking_uri(uri := f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list", max_results=1000)
    cells = [r for r in runs if "cell_hash" in r.data.tags]
    finished = [r.data.tags["cell_hash"] for r in cells if r.info.status == "FINISHED"]
    assert len(finished) == len(set(finished)) == 5, (uri, sorted(finished))  # none lost, none duplicated
    # the final grid closed what the killed ones left RUNNING (their locks were free): nothing stays RUNNING
    assert {r.info.status for r in cells} <= {"FINISHED", "KILLED", "FAILED"}
    for r in cells:  # an unfinished run never carries a result
        if r.info.status != "FINISHED":
            assert "clean/acc" not in r.data.metrics
    # joblib workers inherit the parent run id the GridCallback exported: every cell hangs under a grid run
    grids = {r.info.run_id: r for r in runs if r.data.tags.get("grid") == "true"}
    assert len(grids) == 1 + len(signals) and all(r.data.tags.get("mlflow.parentRunId") in grids for r in cells)
    assert sorted(r.info.status for r in grids.values()) == ["FINISHED"] + ["KILLED"] * len(signals)
    assert all(tracking.KILLED_REASON_TAG in r.data.tags for r in grids.values() if r.info.status == "KILLED")
    ledger = [json.loads(line) for line in (tmp_path / "final" / "cells.jsonl").read_text().splitlines()]
    assert len(ledger) == 6 and {c["status"] for c in ledger} <= {"finished", "skipped"}
    entries = list((tmp_path / "cache").rglob("*.safetensors"))
    assert sorted(e.parent.name for e in entries) == ["dense"] + ["pruned"] * 5  # each whole and verified:
    for entry in entries:
        assert ModelCache(tmp_path / "cache").load(entry.parent.name, entry.stem) is not None


def test_ctrl_c_inside_a_cell_leaves_a_killed_run_and_the_rerun_finishes_it(tmp_path, monkeypatch):
    from attacks.evasion import EvasionThreat

    cfg = ("train.epochs=1", "pruning.sparsity=0.5", *QUICK)
    evaluate = EvasionThreat.evaluate
    monkeypatch.setattr(EvasionThreat, "evaluate", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        run_cell(make_cfg(tmp_path, *cfg))
    monkeypatch.setattr(EvasionThreat, "evaluate", evaluate)
    done = run_cell(make_cfg(tmp_path, *cfg))
    assert done.status == "finished" and done.metrics["cache/dense_hit"] == 1.0  # the cache survived the interrupt
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    assert sorted(r.info.status for r in runs) == ["FINISHED", "KILLED"]
    assert run_cell(make_cfg(tmp_path, *cfg)).status == "skipped"


# ---------------------------------------------------------------- determinism

def test_same_seed_same_dense_model_other_seed_other_model(tmp_path, digits):
    def dense(seed):
        cfg = make_cfg(tmp_path, "train.epochs=1", f"seed={seed}")
        model, _ = stages.dense_model(cfg, digits, hashing.dense_key(cfg, None), ModelCache(tmp_path), CPU, False)
        return model.state_dict(), hashing.dense_key(cfg, None)

    (a, key_a), (b, key_b), (c, key_c) = dense(0), dense(0), dense(1)
    assert key_a == key_b != key_c
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not any(torch.equal(a[k], c[k]) for k in a)  # every tensor differs (init and batch order)


# ---------------------------------------------------------------- the store itself

OPENER = """
import sys, time
from pathlib import Path
from benchmark import tracking
uri, artifacts, barrier, me, n = sys.argv[1], sys.argv[2], Path(sys.argv[3]), sys.argv[4], int(sys.argv[5])
(barrier / me).touch()
while len(list(barrier.iterdir())) < n:  # everyone imported: reach the store at the same moment
    time.sleep(0.001)
print(tracking.setup_experiment(uri, "race", artifacts))
"""


def test_processes_opening_a_fresh_store_together_all_get_it(tmp_path):
    """Concurrent first opens of one SQLite store: without serialised, atomic creation MLflow's migrations race
    ("duplicate column name", "table _alembic_tmp_... already exists")."""
    store, barrier, n = tmp_path / "results", tmp_path / "barrier", 3
    barrier.mkdir()
    openers = [_python(OPENER, tracking_store.default_tracking_uri(store), store / "mlartifacts", barrier, i, n)
               for i in range(n)]
    results = [(p.wait(timeout=180), p.stdout.read().strip(), p.stderr.read()) for p in openers]
    assert [rc for rc, _, _ in results] == [0] * n, [err[-1500:] for _, _, err in results]
    assert len({out for _, out, _ in results}) == 1  # one experiment
    assert sorted(p.name for p in store.iterdir()) == ["mlflow.db", "mlflow.db.lock"]


CONCURRENT = ["debug=tiny", "train.epochs=1", *QUICK,
              "pruning=magnitude_global", "pruning.sparsity=0.5,0.9"]  # 2 cells, one dense model


@pytest.mark.slow
def test_grids_started_together_on_a_fresh_store_fail_no_cell_and_run_each_once(tmp_path):
    """Three grids on a store that does not exist yet: one creates it (under its lock, in a temporary file), the
    others wait and use it; every cell runs once (cell locks) and no grid reports a failed cell."""
    grids = [subprocess.Popen([sys.executable, "-m", "benchmark.run", "-m", *CONCURRENT, f"results_dir={tmp_path}",
                               f"hydra.sweep.dir={tmp_path / f'sweep{i}'}"], cwd=ROOT, env=ENV,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(3)]
    outputs = [grid.communicate(timeout=300)[0] for grid in grids]
    assert [grid.returncode for grid in grids] == [0, 0, 0], [out[-2000:] for out in outputs]
    ledgers = [[json.loads(line) for line in (tmp_path / f"sweep{i}" / "cells.jsonl").read_text().splitlines()]
               for i in range(3)]
    assert all(len(ledger) == 2 for ledger in ledgers)
    assert {cell["status"] for ledger in ledgers for cell in ledger} <= {"finished", "skipped"}
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("default").experiment_id], max_results=100)
    finished = [r.data.tags["cell_hash"] for r in runs if "cell_hash" in r.data.tags and r.info.status == "FINISHED"]
    assert len(finished) == len(set(finished)) == 2
    assert not list(tmp_path.glob("mlflow.db.tmp-*"))


@contextlib.contextmanager
def tmpfs(path: Path, size: str):
    """A small tmpfs mounted at `path` (needs root and CAP_SYS_ADMIN; the test is skipped without them)."""
    path.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True,
                             text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root with CAP_SYS_ADMIN): {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "--lazy", str(path)], check=True)  # MLflow may still hold the file open


def test_store_creation_on_a_full_disk_leaves_nothing_and_succeeds_once_space_is_freed(tmp_path):
    with tmpfs(tmp_path / "small", "256k") as results:  # a fresh store needs ~1 MB
        uri = tracking_store.default_tracking_uri(results)
        with pytest.raises(tracking_store.StoreUnavailable, match="could not create .*mlflow.db .*disk is full"):
            tracking.setup_experiment(uri, "full", results / "mlartifacts")
        assert sorted(p.name for p in results.iterdir()) == ["mlflow.db.lock"]  # no half-made store
        subprocess.run(["mount", "-o", "remount,size=8m", str(results)], check=True)
        experiment_id = tracking.setup_experiment(uri, "full", results / "mlartifacts")
        assert MlflowClient(uri).get_experiment(experiment_id).name == "full"


def test_read_only_store_fails_at_once_naming_the_folder(tmp_path):
    tracking.setup_experiment(tracking_store.default_tracking_uri(tmp_path / "made"), "ro", tmp_path / "mlartifacts")
    with tmpfs(tmp_path / "ro", "8m") as results:
        shutil.copy(tmp_path / "made" / "mlflow.db", results / "mlflow.db")
        subprocess.run(["mount", "-o", "remount,ro", str(results)], check=True)
        started = time.monotonic()
        with pytest.raises(tracking_store.StoreUnavailable, match=f"folder {results} is not writable .Read-only file"):
            tracking.setup_experiment(tracking_store.default_tracking_uri(results), "ro", results / "mlartifacts")
        assert time.monotonic() - started < 5
