"""Scale-out, for real (`make test-scale`, as root; marked `scale`, so `make test` leaves it out).

Starts a PostgreSQL-backed MLflow server (artifacts proxied into the results dir), a single-node Slurm cluster and a
local Ray head, each on loopback, and checks: concurrent run logging loses and duplicates nothing; a 6-cell grid on
Slurm (one job per cell) survives `scancel` of a running cell (the grid fails, the re-run recomputes only that
cell and leaves no run RUNNING); the same grid on Ray; figures and the verifier read the server; the server
`make server` runs beyond loopback (MLflow's basic-auth app, started here on loopback) answers 401 to anyone
without a password and logs an authenticated grid. Every service is
stopped at the end, also on failure. STATE (default /tmp/prunesec-scale) holds their data and the results dir.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

pytestmark = [pytest.mark.scale,
              pytest.mark.skipif(os.geteuid() != 0, reason="installs packages and starts daemons: run as root")]

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
STATE = Path(os.environ.get("PRUNESEC_SCALE_STATE", "/tmp/prunesec-scale"))
RESULTS = STATE / "results"
SERVER_PORT, AUTH_SERVER_PORT, RAY_PORT = 15001, 15002, 26379  # Ray keeps 10002-19999 for its workers
MAKE = ["make", "-s", "-o", ".venv/.installed"]  # make test-scale has checked the venv already
PY, PY_RAY = str(ROOT / ".venv/bin/python"), str(ROOT / ".venv-ray/bin/python")

# The 6-cell grid (2 models x 3 sparsities), small cells, one torch thread each. Slurm gives a cancelled step ~3 s
# between SIGTERM and SIGKILL (KillWait 1 s, slurm_up.sh) and submitit ignores SIGTERM, so a cell that ends within
# that window of a scancel still reports its result: the Slurm test keeps its victim waiting (dense_model_lock).
GRID = ["dataset=digits", "model=lenet300,seed_cnn", "pruning=magnitude_global", "pruning.sparsity=0.5,0.7,0.9",
        "threat=fgsm", "threat.subset=50", "train.epochs=30", "finetune.epochs=3", "eval.corruptions.enabled=false",
        "eval.interpret.enabled=false", "eval.latency.repeats=2", "device=cpu", "torch_threads=1"]
SLURM = ["hydra/launcher=slurm", "hydra.launcher.partition=local", "hydra.launcher.cpus_per_task=1",
         "hydra.launcher.mem_gb=1", "hydra.launcher.timeout_min=20"]
RAY = ["hydra/launcher=ray_cluster", f"hydra.launcher.ray.init.address=127.0.0.1:{RAY_PORT}"]
RAY_LOOPBACK = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}  # single-machine Ray: it keeps 127.0.0.1, not the host's IP


def say(message: str) -> None:
    print(f"[scale {time.strftime('%H:%M:%S')}] {message}", flush=True)


def sh(*command: str, env: dict | None = None, timeout: float = 900) -> str:
    """Run a command from the repository root; fail the test with its output if it fails."""
    done = subprocess.run(command, cwd=ROOT, env={**os.environ, **(env or {})}, capture_output=True, text=True,
                          timeout=timeout)
    if done.returncode != 0:
        pytest.fail(f"{' '.join(command)} exited {done.returncode}\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}")
    return done.stdout


def wait_until(what: str, predicate, timeout: float, every: float = 1.0):
    deadline = time.monotonic() + timeout
    while (value := predicate()) is None or value is False:
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)
    return value


def stop_group(process: subprocess.Popen, name: str) -> None:
    """SIGTERM the process group started with start_new_session (the server and its workers), SIGKILL whatever
    of it is left after 30 s."""
    def group_alive() -> bool:
        try:
            os.killpg(process.pid, 0)
            return True
        except ProcessLookupError:
            return False

    say(f"stopping {name}")
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if group_alive():
            os.killpg(process.pid, sig)
        deadline = time.monotonic() + 30
        while group_alive() and time.monotonic() < deadline:
            process.poll()  # reap the group leader
            time.sleep(0.5)


# ------------------------------------------------------------------------------------------------------- services
@pytest.fixture(scope="session")
def state() -> Path:
    shutil.rmtree(STATE, ignore_errors=True)
    RESULTS.mkdir(parents=True)
    return STATE


@pytest.fixture(scope="session")
def server(state):
    """PostgreSQL + `make server` on it; yields the tracking URI."""
    started = time.monotonic()
    try:
        backend = sh("bash", str(HERE / "postgres_up.sh"), str(state / "postgres")).strip().splitlines()[-1]
        log = open(state / "mlflow-server.log", "w")
        process = subprocess.Popen(
            [*MAKE, "server", f"BACKEND_URI={backend}", f"SERVER_PORT={SERVER_PORT}", f"RESULTS={RESULTS}"],
            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        uri = f"http://127.0.0.1:{SERVER_PORT}"
        try:
            wait_until("the MLflow server", lambda: process.poll() is not None or _healthy(uri), 180)
            assert process.poll() is None, (state / "mlflow-server.log").read_text()[-3000:]
            say(f"MLflow server on {backend.split('@')[1]} up in {time.monotonic() - started:.0f}s: {uri}")
            yield uri
        finally:
            stop_group(process, "the MLflow server")
    finally:
        subprocess.run(["bash", str(HERE / "postgres_down.sh"), str(state / "postgres")], cwd=ROOT)


def _healthy(uri: str) -> bool:
    try:
        with urllib.request.urlopen(f"{uri}/health", timeout=5) as answer:
            return answer.status == 200
    except OSError:
        return False


@pytest.fixture(scope="session")
def slurm(state):
    """A single-node Slurm cluster; yields the environment its clients need."""
    slurm_dir = str(state / "slurm")
    try:
        started = time.monotonic()
        sh("bash", str(HERE / "slurm_up.sh"), slurm_dir)
        say(f"Slurm up in {time.monotonic() - started:.0f}s")
        yield {"SLURM_CONF": f"{slurm_dir}/slurm.conf"}
    finally:
        subprocess.run(["bash", str(HERE / "slurm_down.sh"), slurm_dir], cwd=ROOT)


@pytest.fixture(scope="session")
def ray_head(state):
    """The Ray venv (built if missing) and a Ray head on 127.0.0.1:RAY_PORT with 2 CPUs."""
    started = time.monotonic()
    sh(*MAKE, "venv-ray", timeout=1800)
    say(f"Ray venv ready in {time.monotonic() - started:.0f}s")
    ray = str(ROOT / ".venv-ray/bin/ray")
    try:
        sh(ray, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={RAY_PORT}", "--num-cpus=2",
           "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={state / 'ray'}", env=RAY_LOOPBACK,
           timeout=300)
        yield f"127.0.0.1:{RAY_PORT}"
    finally:
        subprocess.run([ray, "stop", "--force"], cwd=ROOT, capture_output=True)


# ---------------------------------------------------------------------------------------------------- helpers
def client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def runs_of(uri: str, experiment: str, cells_only: bool = True) -> list:
    c = client(uri)
    found = c.get_experiment_by_name(experiment)
    if found is None:
        return []
    runs = c.search_runs([found.experiment_id], max_results=5000)
    return [r for r in runs if not (cells_only and r.data.tags.get("grid") == "true")]


def ledger(sweep_dir: Path) -> list[dict]:
    path = sweep_dir / "cells.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def grid_command(python: str, uri: str, experiment: str, sweep_dir: Path, launcher: list[str]) -> list[str]:
    return [python, "-m", "benchmark.run", "-m", *GRID, *launcher, f"tracking_uri={uri}",
            f"results_dir={RESULTS}", f"experiment_name={experiment}", f"hydra.sweep.dir={sweep_dir}"]


def run_grid(command: list[str], log_name: str, env: dict | None = None, timeout: float = 900) -> int:
    started = time.monotonic()
    with open(STATE / log_name, "w") as log:
        code = subprocess.run(command, cwd=ROOT, env={**os.environ, **(env or {})}, stdout=log,
                              stderr=subprocess.STDOUT, timeout=timeout).returncode
    say(f"{log_name}: exit code {code} in {time.monotonic() - started:.0f}s")
    return code


def tail(log_name: str) -> str:
    return (STATE / log_name).read_text()[-5000:]


# ------------------------------------------------------------------------------------------------------ tests
@pytest.mark.timeout(900)
def test_concurrent_logging_loses_and_duplicates_nothing(server):
    """3 processes x 20 cells' worth of runs at once through the server: 60 FINISHED runs, one per cell hash,
    each with its params, metrics, curve and proxied artifacts."""
    workers = ["w0", "w1", "w2"]
    processes = [subprocess.Popen([PY, str(HERE / "log_runs.py"), server, "scale_logging", worker, "20", str(RESULTS)],
                                  cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  env={**os.environ, "PYTHONPATH": str(ROOT)}) for worker in workers]
    reports = []
    for process in processes:
        out, err = process.communicate(timeout=600)
        assert process.returncode == 0, err[-3000:]
        reports.append(json.loads(out.strip().splitlines()[-1]))
    say("MLflow logging per run through the PostgreSQL server, 3 writers: median "
        + ", ".join(f"{r['median_s_per_run'] * 1000:.0f} ms" for r in reports))

    runs = runs_of(server, "scale_logging")
    expected = {hashlib.sha256(f"{w}-{i}".encode()).hexdigest()[:16] for w in workers for i in range(20)}
    hashes = [r.data.tags["cell_hash"] for r in runs]
    assert len(runs) == 60 and sorted(hashes) == sorted(expected), f"{len(runs)} runs, {len(set(hashes))} cells"
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert {r.info.run_id for r in runs} == {run_id for r in reports for run_id in r["run_ids"]}
    assert all(len(r.data.params) == 30 and len(r.data.metrics) == 41 for r in runs)
    sample = runs[0]
    assert [m.step for m in client(server).get_metric_history(sample.info.run_id, "robust/curve")] == list(range(10))
    # proxied: the run's artifact URI is the server's, the files land under the server's artifacts destination
    assert sample.info.artifact_uri.startswith("mlflow-artifacts:"), sample.info.artifact_uri
    stored = list((RESULTS / "mlartifacts").rglob(f"{sample.info.run_id}/artifacts/model/weights.txt"))
    assert len(stored) == 1 and stored[0].stat().st_size == 4096

    # one writer alone, the same 20 runs: a local SQLite file vs the PostgreSQL server (printed, not asserted)
    for store, uri in (("SQLite file", f"sqlite:///{STATE / 'logging-sqlite.db'}"), ("PostgreSQL server", server)):
        report = json.loads(sh(PY, str(HERE / "log_runs.py"), uri, "scale_logging_alone", "alone", "20", str(RESULTS),
                               env={"PYTHONPATH": str(ROOT)}).strip().splitlines()[-1])
        say(f"MLflow logging per run, one writer, {store}: median {report['median_s_per_run'] * 1000:.0f} ms")


def dense_model_lock(model: str):
    """The cache lock a grid cell of `model` holds while it trains its dense model (benchmark/stages.py), and the
    cache file that training writes."""
    from benchmark.cache import ModelCache
    from benchmark.hashing import dense_key
    from benchmark.validate import compose_config

    cell = compose_config([o for o in GRID if not o.startswith(("model=", "pruning.sparsity="))]
                          + [f"model={model}", "pruning.sparsity=0.5", f"results_dir={RESULTS}"])
    key, cache = dense_key(cell, None), ModelCache(RESULTS / "cache")
    return cache.lock("dense", key), cache.path("dense", key)


@pytest.mark.timeout(1500)
def test_slurm_grid_cancel_and_rerun(server, slurm):
    """Every cell a Slurm job; scancel one mid-compute: the grid fails; the re-run recomputes only that cell and
    leaves no run RUNNING; each cell run carries its Slurm job id."""
    experiment = "scale_slurm"
    # The test holds the seed CNN's dense-model lock until the cancel has taken effect: every seed-CNN cell waits
    # on it inside its run, so the victim is mid-compute whatever the machine's speed (a cell that ended within
    # Slurm's SIGTERM-to-SIGKILL window would report its result, and the grid would rightly not fail).
    lock, dense_file = dense_model_lock("seed_cnn")
    lock.acquire()
    try:
        first = grid_command(PY, server, experiment, STATE / "sweeps/slurm-1", SLURM)
        say("Slurm grid, first run: " + " ".join(first[2:]))
        with open(STATE / "slurm-1.log", "w") as log:
            grid = subprocess.Popen(first, cwd=ROOT, env={**os.environ, **slurm}, stdout=log,
                                    stderr=subprocess.STDOUT)

        def a_running_cell():
            if grid.poll() is not None:
                pytest.fail(f"the grid ended before a cell was seen running:\n{tail('slurm-1.log')}")
            running = [r for r in runs_of(server, experiment)
                       if r.info.status == "RUNNING" and r.info.run_name.startswith("seed_cnn|")]
            return min(running, key=lambda r: r.info.start_time) if running else None

        victim = wait_until("a seed-CNN cell to be running", a_running_cell, 600, every=0.5)
        job_id = f"{victim.data.tags['slurm_array_job_id']}_{victim.data.tags['slurm_array_task_id']}"  # squeue's
        say(f"scancel {job_id}: {victim.info.run_name} (run {victim.info.run_id}) mid-compute")
        sh("scancel", job_id, env=slurm)
        wait_until(f"job {job_id} to leave the queue",
                   lambda: job_id not in sh("squeue", "-h", "-o", "%i", env=slurm).split(), 120, every=0.5)
    finally:
        lock.release()
    code = grid.wait(900)
    say(f"first run: exit code {code}")
    assert code != 0, f"the grid hid a cancelled cell:\n{tail('slurm-1.log')}"
    assert dense_file.exists(), f"no {dense_file}: the lock the test held was not the one the cells wait on"
    wait_until("the Slurm queue to drain", lambda: not sh("squeue", "-h", "-o", "%i", env=slurm).strip(), 300)
    assert client(server).get_run(victim.info.run_id).info.status != "FINISHED"
    state_of_job = sh("sacct", "-n", "-X", "-o", "State", "-j", job_id, env=slurm).split()
    assert state_of_job and state_of_job[0].startswith("CANCELLED"), state_of_job

    second_dir = STATE / "sweeps/slurm-2"
    code = run_grid(grid_command(PY, server, experiment, second_dir, SLURM), "slurm-2.log", slurm)
    assert code == 0, tail("slurm-2.log")
    cells = ledger(second_dir)
    recomputed = [c["cell_hash"] for c in cells if c["status"] == "finished"]
    assert len(cells) == 6 and recomputed == [victim.data.tags["cell_hash"]], cells
    assert sum(c["status"] == "skipped" for c in cells) == 5

    runs = runs_of(server, experiment, cells_only=False)
    assert not [r.info.run_name for r in runs if r.info.status == "RUNNING"], "a run was left RUNNING"
    finished = [r for r in runs if r.info.status == "FINISHED" and r.data.tags.get("grid") != "true"]
    assert len({r.data.tags["cell_hash"] for r in finished}) == len(finished) == 6
    job_ids = [r.data.tags.get("slurm_job_id") for r in finished]
    assert None not in job_ids and len(set(job_ids)) == 6, job_ids


@pytest.mark.timeout(2400)
def test_ray_grid(server, ray_head):
    """The same 6-cell grid with Hydra's Ray launcher against the Ray head: 6 FINISHED runs under one parent."""
    experiment, sweep_dir = "scale_ray", STATE / "sweeps/ray"
    command = grid_command(PY_RAY, server, experiment, sweep_dir, RAY)
    say("Ray grid: " + " ".join(command[2:]))
    assert run_grid(command, "ray.log", RAY_LOOPBACK) == 0, tail("ray.log")
    cells = ledger(sweep_dir)
    assert sorted(c["status"] for c in cells) == ["finished"] * 6, cells
    runs = runs_of(server, experiment)
    assert len(runs) == 6 and {r.info.status for r in runs} == {"FINISHED"}
    parents = {r.data.tags.get("mlflow.parentRunId") for r in runs}
    assert len(parents) == 1 and None not in parents, parents


# The engines' timing grid: 12 cells (2 models x 6 sparsities) on mnist5k, short enough that the engines' own
# costs (process start-up, submission, scheduling) show against the cells' compute.
ENGINE_GRID = ["dataset=mnist5k", "model=lenet300,seed_cnn", "pruning=magnitude_global",
               "pruning.sparsity=0.3,0.5,0.7,0.8,0.9,0.95", "threat=fgsm", "threat.subset=200", "train.epochs=2",
               "finetune.epochs=1", "eval.corruptions.enabled=false", "eval.interpret.enabled=false",
               "eval.latency.repeats=2", "device=cpu", "torch_threads=1"]
ENGINES = {"sequential": (PY, ["hydra/launcher=basic"], {}),
           "joblib": (PY, ["hydra/launcher=parallel", "hydra.launcher.n_jobs=2"], {}),
           "slurm": (PY, [*SLURM, "hydra.launcher.array_parallelism=2"], None),
           "ray": (PY_RAY, RAY, RAY_LOOPBACK)}
PERF_ENGINES = Path(os.environ.get("PRUNESEC_PERF_ENGINES", ROOT / "results" / "perf_engines.json"))


@pytest.mark.timeout(3600)
def test_engine_timings(server, slurm, ray_head):
    """The same 12-cell grid on each engine, every cell logging to the PostgreSQL server, each engine with its own
    results dir (so each trains its own dense models): wall time, the cells' own time, and what the engine adds per
    cell; then MLflow logging time per run, one writer, SQLite file vs the server. Written to PERF_ENGINES."""
    import statistics

    result = {"grid": " ".join(ENGINE_GRID), "cells": 12, "cpus": os.cpu_count(), "engines": {}}
    for name, (python, launcher, env) in ENGINES.items():
        results = STATE / f"engine-{name}"
        command = [python, "-m", "benchmark.run", "-m", *ENGINE_GRID, *launcher, f"tracking_uri={server}",
                   f"results_dir={results}", f"experiment_name=engines_{name}",
                   f"hydra.sweep.dir={STATE / 'sweeps' / f'engine-{name}'}"]
        load = os.getloadavg()[0]
        started = time.monotonic()
        assert run_grid(command, f"engine-{name}.log", slurm if env is None else env, timeout=3000) == 0, \
            tail(f"engine-{name}.log")
        wall = time.monotonic() - started
        runs = runs_of(server, f"engines_{name}")
        assert len(runs) == 12 and {r.info.status for r in runs} == {"FINISHED"}
        cell_s = sum(r.data.metrics["time/cell_s"] for r in runs)
        workers = 1 if name == "sequential" else 2
        result["engines"][name] = {
            "wall_s": wall, "cells_s": cell_s, "workers": workers, "load_avg_1m_before": load,
            # capacity the engine spends per cell beyond the cell's own time: process start-up and imports,
            # submission and scheduling, the grid's pre-check and parent run, workers idle at the end
            "overhead_per_cell_s": (wall * workers - cell_s) / 12}
        say(f"engine {name}: {wall:.0f} s wall, cells {cell_s:.0f} s, overhead/cell "
            f"{result['engines'][name]['overhead_per_cell_s']:.1f} s")
    slurm_jobs = sh("sacct", "-n", "-X", "-P", "-o", "Submit,Start", "-S", "now-2hours", env=slurm).split()
    waits = [_seconds_between(*line.split("|")) for line in slurm_jobs if "|" in line and "Unknown" not in line]
    result["engines"]["slurm"]["queue_wait_median_s"] = statistics.median(waits) if waits else None
    for store, uri in (("sqlite", f"sqlite:///{STATE / 'logging-timing.db'}"), ("postgresql_server", server)):
        report = json.loads(sh(PY, str(HERE / "log_runs.py"), uri, "logging_timing", "timing", "20", str(RESULTS),
                               env={"PYTHONPATH": str(ROOT)}).strip().splitlines()[-1])
        result[f"logging_s_per_run_{store}"] = report["median_s_per_run"]
    PERF_ENGINES.parent.mkdir(parents=True, exist_ok=True)
    PERF_ENGINES.write_text(json.dumps(result, indent=1))
    say(f"wrote {PERF_ENGINES}")


def _seconds_between(first: str, second: str) -> float:
    from datetime import datetime

    return (datetime.fromisoformat(second) - datetime.fromisoformat(first)).total_seconds()


@pytest.mark.timeout(900)
def test_figures_and_verify_read_the_server(server):
    """`make figures` and `make verify` with TRACKING_URI=http://... on the Slurm grid's experiment."""
    if not runs_of(server, "scale_slurm"):
        pytest.skip("needs the Slurm grid of test_slurm_grid_cancel_and_rerun")
    out = RESULTS / "from-server"
    sh(*MAKE, "figures", f"TRACKING_URI={server}", "EXPERIMENT=scale_slurm", f"RESULTS={out}")
    assert list((out / "figures").glob("*.png")) and (out / "tables" / "summary.csv").exists()
    verified = sh(*MAKE, "verify", f"TRACKING_URI={server}", "EXPERIMENT=scale_slurm")  # exit 0: all within tolerance
    print(verified[-2000:])
    assert re.search(r"^verify: [1-9]\d* cells, [1-9]\d* comparisons", verified, re.M), verified[-2000:]


# ------------------------------------------------------------------------------------ the authenticated server
@pytest.fixture(scope="session")
def auth_server(state):
    """benchmark.tools.server with MLflow's basic-auth app (what `make server SERVER_HOST=0.0.0.0` starts), on
    loopback; yields (tracking URI, admin password)."""
    password = hashlib.sha256(os.urandom(16)).hexdigest()[:20]
    folder = state / "auth-server"
    log = open(state / "mlflow-auth-server.log", "w")
    process = subprocess.Popen(
        [PY, "-m", "benchmark.tools.server", "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
         "--artifacts-destination", str(folder / "mlartifacts"), "--auth-dir", str(folder / "mlflow-auth"),
         "--host", "127.0.0.1", "--port", str(AUTH_SERVER_PORT), "--workers", "1", "--auth"],
        cwd=ROOT, env={**os.environ, "MLFLOW_AUTH_ADMIN_PASSWORD": password}, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True)
    uri = f"http://127.0.0.1:{AUTH_SERVER_PORT}"
    try:
        wait_until("the authenticated MLflow server", lambda: process.poll() is not None or _healthy(uri), 180)
        assert process.poll() is None, (state / "mlflow-auth-server.log").read_text()[-3000:]
        yield uri, password
    finally:
        stop_group(process, "the authenticated MLflow server")


def _status(url: str, user: str | None = None, password: str | None = None) -> int:
    import base64

    headers = {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()} if user else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=30) as answer:
            return answer.status
    except urllib.error.HTTPError as err:
        return err.code


@pytest.mark.timeout(900)
def test_authenticated_server_refuses_anonymous_requests_and_logs_an_authenticated_grid(auth_server):
    uri, password = auth_server
    search = f"{uri}/api/2.0/mlflow/experiments/search?max_results=10"
    assert _status(search) == 401
    assert _status(search, "admin", "not-the-password") == 401
    assert _status(search, "admin", password) == 200
    grid = [PY, "-m", "benchmark.run", "-m", "debug=tiny", "model=lenet300", "threat=fgsm", "pruning.sparsity=0.5,0.7",
            "train.epochs=1", "finetune.epochs=0", "threat.subset=20", "eval=fast", "torch_threads=1",
            f"tracking_uri={uri}", f"results_dir={RESULTS / 'auth'}", "experiment_name=scale_auth"]
    anonymous = {key: value for key, value in os.environ.items() if not key.startswith("MLFLOW_TRACKING_")}
    refused = subprocess.run(grid, cwd=ROOT, env=anonymous, capture_output=True, text=True, timeout=600)
    assert refused.returncode == 2 and "refused the login (HTTP 401" in refused.stdout + refused.stderr, \
        (refused.stdout + refused.stderr)[-3000:]
    user = {"MLFLOW_TRACKING_USERNAME": "admin", "MLFLOW_TRACKING_PASSWORD": password}
    assert run_grid(grid, "grid-auth.log", env=user) == 0, tail("grid-auth.log")
    from mlflow.tracking import MlflowClient

    os.environ.update(user)
    try:
        client = MlflowClient(uri)
        experiment = client.get_experiment_by_name("scale_auth")
        runs = client.search_runs([experiment.experiment_id])
    finally:
        for key in user:
            os.environ.pop(key)
    cells = [run for run in runs if run.data.tags.get("grid") != "true"]
    assert sorted(run.info.status for run in cells) == ["FINISHED", "FINISHED"]
    assert {run.data.params["pruning.sparsity"] for run in cells} == {"0.5", "0.7"}
