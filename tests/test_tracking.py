"""MLflow layout of a real tiny grid (experiment, parent run, nested cells, params, tags, curves), resume
(re-run grid logs nothing new, a killed cell is redone, force recomputes) and the MLflow server's REST view."""
from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

import tiny_store
from benchmark import tracking, tracking_store, ui_view
from benchmark.cell import run_cell
from conftest import cli_env, make_cfg


def cell_runs(client, experiment_id, status=None):
    runs = client.search_runs([experiment_id], max_results=1000)
    return [r for r in runs if r.data.tags.get("grid") != "true" and (status is None or r.info.status == status)]


def expected_names():
    return {f"seed_cnn|{m}|s={s}|evasion|seed={seed}"
            for m in ("magnitude_global", "l1_filter") for s in ("0.5", "0.9") for seed in (0, 1)}


def test_grid_layout_parent_cells_params_tags_curves(store):
    client = MlflowClient(store.uri)
    experiment = client.get_experiment_by_name(store.experiment)  # one experiment per grid, named by the preset
    assert experiment is not None and experiment.artifact_location.startswith(store.results.as_uri())
    # the UI opens it on its training runs, not on the GenAI traces overview
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    # the first grid's parent run holds every cell; a re-run of the shared store (tests/test_grid_rerun.py) adds its own
    parents = sorted((r for r in runs if r.data.tags.get("grid") == "true"), key=lambda r: r.info.start_time)
    assert parents and all(p.info.run_name == "grid:tiny" and p.info.status == "FINISHED" for p in parents)
    # the grid's own curves and tables on its parent run
    parent_artifacts = {a.path for d in ("figures", "tables") for a in client.list_artifacts(parents[0].info.run_id, d)}
    setting = "seed_cnn__digits__evasion"
    assert {f"figures/{f}__{setting}.png" for f in ("robust_vs_sparsity", "clean_vs_sparsity")} <= parent_artifacts
    assert {"tables/summary.csv", "tables/summary.md", "tables/pie.csv"} <= parent_artifacts  # 2 seeds: exemplars
    summary = client.download_artifacts(parents[0].info.run_id, "tables/summary.csv")
    assert len(open(summary).read().splitlines()) == 1 + 4  # a row per method and sparsity (mean over 2 seeds)
    cells = cell_runs(client, experiment.experiment_id)
    assert Counter(c["status"] for c in store.ledger) == {"finished": tiny_store.N_CELLS}
    assert len(cells) == tiny_store.N_CELLS == len({r.data.tags["cell_hash"] for r in cells})
    assert {r.info.run_name for r in cells} == expected_names()
    for run in cells:
        assert run.info.status == "FINISHED"
        assert run.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        params, tags = run.data.params, run.data.tags
        model, method, sparsity, threat, seed = run.info.run_name.split("|")
        assert (params["model.name"], params["pruning.method"], params["threat.name"]) == (model, method, threat)
        assert float(params["pruning.sparsity"]) == float(sparsity[2:]) and f"seed={params['seed']}" == seed
        assert params["dataset.name"] == "digits" and params["train.epochs"] == "3"
        assert re.fullmatch(r"[0-9a-f]{40}", tags["git_commit"]) and tags["git_dirty"] in {"true", "false"}
        assert tags["version.torch"].startswith("2.") and tags["host"] and tags["device"] == "cpu"
        assert re.fullmatch(r"[0-9a-f]{16}", tags["cell_hash"])
        # CPU floats depend on the thread count: each stage's is recorded (the grid runs with OMP_NUM_THREADS=1)
        assert [tags[f"torch_threads.{s}"] for s in ("dense", "finetune", "eval")] == ["1", "1", "1"]
        inputs = {d.dataset.name: d for d in run.inputs.dataset_inputs}  # the UI's "Datasets" column
        assert set(inputs) == {"digits-train", "digits-test"}
        assert [t.value for t in inputs["digits-train"].tags if t.key == "mlflow.data.context"] == ["train"]
    assert len({d.dataset.digest for r in cells for d in r.inputs.dataset_inputs}) == 2 * 2  # a split per seed
    # flattened params make the UI's and search_runs' filters work
    l1 = client.search_runs([experiment.experiment_id], "params.pruning.method = 'l1_filter' and params.seed = '1'")
    assert sorted(r.info.run_name for r in l1) == ["seed_cnn|l1_filter|s=0.5|evasion|seed=1",
                                                   "seed_cnn|l1_filter|s=0.9|evasion|seed=1"]
    # curves with a natural x-axis are logged with step: robust accuracy vs milli-eps, loss vs fine-tune epoch
    run = cells[0]
    for attack in ("fgsm", "pgd_linf"):
        history = sorted(client.get_metric_history(run.info.run_id, f"robust_curve/{attack}"), key=lambda m: m.step)
        assert [m.step for m in history] == [50, 100, 200, 300]
        assert [m.value for m in history] == [run.data.metrics[f"robust/{attack}/eps_{e}"] for e in (0.05, 0.1, 0.2, 0.3)]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "finetune/loss")] == [1]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "sparsity_per_layer.json", "model"} <= artifacts


def test_grid_writes_the_ui_view_of_its_cells(store):
    """The saved view `make ui`'s link opens (benchmark/ui_view.py), in the envelope MLflow 3.17's runs page reads:
    its filter lists exactly the cells and no grid run (a listed grid run would nest the cells under its collapsed
    row); its columns and scatter charts (security metric vs achieved sparsity) name metrics the cells logged."""
    client = MlflowClient(store.uri)
    experiment = client.get_experiment_by_name(store.experiment)
    tag = experiment.tags[ui_view.VIEW_TAG_PREFIX + ui_view.VIEW_ID]
    assert len(tag) <= 20000  # MLflow's limit on an experiment tag's value
    envelope = json.loads(tag)
    assert isinstance(envelope["name"], str) and isinstance(envelope["createdAt"], int)
    state = json.loads(envelope["state"])  # a JSON string inside the envelope, as the UI writes it
    listed = client.search_runs([experiment.experiment_id], state["searchFilter"], max_results=1000)
    assert {r.info.run_name for r in listed} == expected_names()
    assert all(r.info.status == "FINISHED" and r.data.tags.get("grid") != "true" for r in listed)
    logged = set(listed[0].data.metrics)
    columns = [re.fullmatch(r"metrics\.`(.+)`", column)[1] for column in state["selectedColumns"]]
    worst = {key for key in logged if key.startswith("robust/worst/eps_")}
    assert columns[:2] == ["sparsity/achieved", "clean/acc"] and len(worst) == 4 and set(columns) == {
        "sparsity/achieved", "clean/acc", *worst}
    charts = state["compareRunCharts"]
    assert {(c["type"], c["xaxis"]["key"]) for c in charts} == {("SCATTER", "sparsity/achieved")}
    assert sorted(c["yaxis"]["key"] for c in charts) == sorted(["clean/acc", *worst])
    assert {c["metricSectionId"] for c in charts} == {s["uuid"] for s in state["compareRunSections"]}
    assert state["runsHiddenMode"] == "SHOW_ALL"  # every cell in the charts (the UI's default: the first 10)


def test_ui_view_plots_worst_case_robustness_by_eps_then_backdoor_success_then_clean_accuracy():
    logged = ["robust/worst/eps_0.3", "robust/pgd_linf/eps_0.1", "backdoor/asr", "robust/worst/eps_0.05",
              "robust/worst_l2/eps_0.5", "clean/acc", "sparsity/achieved", "robust/worst/subset_size"]
    state = ui_view.cells_view_state(logged)
    plotted = ["robust/worst/eps_0.05", "robust/worst/eps_0.3", "backdoor/asr", "clean/acc"]
    assert [chart["yaxis"]["key"] for chart in state["compareRunCharts"]] == plotted
    assert state["selectedColumns"] == [f"metrics.`{key}`" for key in ["sparsity/achieved", *plotted[-1:],
                                                                       *plotted[:-1]]]


def test_run_names_tell_method_variants_apart(tmp_path):
    from benchmark.cell import run_name

    assert run_name(make_cfg(tmp_path, "pruning=magnitude_global", "pruning.sparsity=0.9", "threat=pgd")) == \
        "seed_cnn|magnitude_global|s=0.9|pgd|seed=0"
    assert run_name(make_cfg(tmp_path, "pruning=snip", "pruning.scope=layerwise", "pruning.sparsity=0.5")) == \
        "seed_cnn|snip+layerwise|s=0.5|pgd|seed=0"
    assert run_name(make_cfg(tmp_path, "pruning=magnitude_global", "pruning.schedule=iterative", "pruning.steps=4",
                             "finetune.adversarial=true", "seed=3")) == \
        "seed_cnn|magnitude_global+iterative4+advft|s=0.5|pgd|seed=3"
    for adversarial, model in (("pgd", "seed_cnn+pgd_at"), ("trades", "seed_cnn+trades")):  # the dense model's training
        assert run_name(make_cfg(tmp_path, f"train.adversarial={adversarial}", "threat=pgd")).startswith(f"{model}|")


def _rerun(store, sweep):
    return tiny_store.run_grid(store.results, sweep)


def test_grid_run_twice_logs_each_cell_once(store):
    seconds, ledger = _rerun(store, "sweep-second")
    assert Counter(c["status"] for c in ledger) == {"skipped": tiny_store.N_JOBS}
    client = MlflowClient(store.uri)
    experiment_id = client.get_experiment_by_name(store.experiment).experiment_id
    assert len(cell_runs(client, experiment_id)) == tiny_store.N_CELLS
    print(f"first run {store.first_run_s:.1f}s, re-run {seconds:.1f}s, ratio {seconds / store.first_run_s:.2f}")


def test_grid_rerun_costs_less_than_the_first_run(store):
    seconds, _ = _rerun(store, "sweep-timed")
    # re-run = process start, composing and hashing each job without torch, one store query, no job launched
    assert seconds < 0.8 * store.first_run_s


def test_failed_or_unfinished_run_does_not_count_as_finished(store):
    client = MlflowClient(store.uri)
    experiment_id = tracking.setup_experiment(store.uri, "status-only", store.results / "mlartifacts")
    for status in ("FAILED", "KILLED", None):  # None: still RUNNING, as a process killed outright leaves it
        run = client.create_run(experiment_id, tags={"cell_hash": "feedfacefeedface"})
        if status:
            client.set_terminated(run.info.run_id, status)
    assert tracking.find_finished_run(experiment_id, "feedfacefeedface") is None
    run = client.create_run(experiment_id, tags={"cell_hash": "feedfacefeedface"})
    client.set_terminated(run.info.run_id, "FINISHED")
    assert tracking.find_finished_run(experiment_id, "feedfacefeedface") == run.info.run_id


def test_cell_run_marks_failed_with_error_and_killed_on_interrupt(store):
    experiment_id = tracking.setup_experiment(store.uri, "status-only", store.results / "mlartifacts")
    for error, status in ((ValueError("boom"), "FAILED"), (KeyboardInterrupt(), "KILLED")):
        with pytest.raises(type(error)):
            with tracking.cell_run(experiment_id, "x", {"cell_hash": "0"}, None) as run:
                raise error
        finished = MlflowClient(store.uri).get_run(run.info.run_id)
        assert finished.info.status == status
    assert MlflowClient(store.uri).get_run(run.info.run_id).data.tags.get("error") is None
    failed = MlflowClient(store.uri).search_runs([experiment_id], "attributes.status = 'FAILED'")
    assert failed and failed[0].data.tags["error"] == "ValueError: boom"


RESUME = ["debug=tiny", "eval=fast", "train.epochs=10", "threat=pgd", "threat.subset=20", "pruning=magnitude_global",
          "pruning.sparsity=0.5", "experiment_name=resume"]


def test_killed_cell_is_left_unfinished_and_redone_then_skipped_and_forced(store):
    client = MlflowClient(store.uri)
    proc = subprocess.Popen([sys.executable, "-m", "benchmark.run", *RESUME, f"results_dir={store.results}"],
                            cwd=tiny_store.ROOT, env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline, killed = time.monotonic() + 60, None
    while time.monotonic() < deadline and proc.poll() is None:  # wait for the cell's run to start, then SIGKILL
        experiment = client.get_experiment_by_name("resume")
        running = experiment and client.search_runs([experiment.experiment_id], "attributes.status = 'RUNNING'")
        if running:
            os.kill(proc.pid, signal.SIGKILL)
            killed = running[0]
            break
        time.sleep(0.05)
    proc.wait(timeout=30)
    assert killed is not None and proc.returncode == -signal.SIGKILL, "the cell finished before it could be killed"
    assert client.get_run(killed.info.run_id).info.status == "RUNNING"  # left unfinished, never FINISHED

    tiny_store.run_cli(*RESUME, f"results_dir={store.results}", multirun=False)  # redone
    experiment_id = client.get_experiment_by_name("resume").experiment_id
    finished = client.search_runs([experiment_id], "attributes.status = 'FINISHED'")
    assert len(finished) == 1 and finished[0].data.tags["cell_hash"] == killed.data.tags["cell_hash"]
    assert finished[0].data.metrics["cache/dense_hit"] == 0.0  # the killed process cached nothing half-done

    cfg = make_cfg(store.results, *RESUME)  # in process: same hash as the CLI computed
    assert run_cell(cfg).status == "skipped"
    cfg.force = True
    forced = run_cell(cfg)
    assert forced.status == "finished"
    assert len(client.search_runs([experiment_id], "attributes.status = 'FINISHED'")) == 2
    assert forced.metrics["clean/acc"] == finished[0].data.metrics["clean/acc"]  # recomputed, same seed, same value


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _post(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


@contextlib.contextmanager
def mlflow_server(store_uri: str, *options: str):
    """`mlflow server` on a free loopback port for the block; yields its base URL."""
    port = _free_port()
    mlflow_bin = os.path.join(os.path.dirname(sys.executable), "mlflow")
    server = subprocess.Popen([mlflow_bin, "server", "--backend-store-uri", store_uri, "--host", "127.0.0.1",
                               "--port", str(port), "--workers", "1", *options],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline and server.poll() is None, "mlflow server did not come up"
            time.sleep(0.3)
        yield base
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # the server's own process group (gunicorn/uvicorn workers too)
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=5)


def test_mlflow_server_rest_api_lists_every_cell(store):
    with mlflow_server(store.uri) as base:
        experiment = _post(f"{base}/api/2.0/mlflow/experiments/search", {"max_results": 100})["experiments"]
        experiment_id = next(e["experiment_id"] for e in experiment if e["name"] == store.experiment)
        runs = _post(f"{base}/api/2.0/mlflow/runs/search",
                     {"experiment_ids": [experiment_id], "filter": "attributes.status = 'FINISHED'",
                      "max_results": 1000})["runs"]
        cells = {r["info"]["run_name"]: r["data"] for r in runs
                 if not any(t["key"] == "grid" for t in r["data"].get("tags", []))}
        assert set(cells) == expected_names()
        for data in cells.values():
            params = {p["key"]: p["value"] for p in data["params"]}
            metrics = {m["key"]: m["value"] for m in data["metrics"]}
            assert params["dataset.name"] == "digits" and "pruning.method" in params
            assert 0 <= metrics["clean/acc"] <= 1 and "robust/worst/eps_0.3" in metrics


def test_a_password_in_the_tracking_uri_is_in_no_output_artifact_param_tag_or_file(tmp_path):
    """A cell logs through a server with `user:password@` in its tracking URI: the password is nowhere in the
    console output, the results dir (Hydra's saved configs, logs), the server's store and artifacts, or the run's
    params, tags and artifacts; the cell hash is the one without credentials."""
    password = "s3cret-Pa55word"
    server_dir = tmp_path / "server"
    server_dir.mkdir()
    cell = ["debug=tiny", "model=lenet300", "threat=fgsm", "train.epochs=1", "finetune.epochs=0", "threat.subset=20",
            "eval=fast", "eval.train_subset=50", f"results_dir={tmp_path / 'results'}"]
    with mlflow_server(f"sqlite:///{server_dir / 'mlflow.db'}", "--artifacts-destination",
                       str(server_dir / "mlartifacts")) as base:
        uri = base.replace("http://", f"http://alice:{password}@")
        done = subprocess.run([sys.executable, "-m", "benchmark.run", *cell, f"tracking_uri={uri}"],
                              cwd=tiny_store.ROOT, env=cli_env(), capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
        client = MlflowClient(base)
        run, = client.search_runs([client.get_experiment_by_name("default").experiment_id])
        assert run.info.status == "FINISHED"
        logged = [*run.data.params.values(), *run.data.tags.values(), run.info.run_name]
        artifacts = tmp_path / "downloaded"
        client.download_artifacts(run.info.run_id, "", str(artifacts))
    assert password not in done.stdout + done.stderr
    assert not [value for value in logged if password in value]
    assert "tracking_uri: http://***@127.0.0.1:" in (artifacts / "config.yaml").read_text()
    files = [path for folder in (tmp_path / "results", server_dir, artifacts) for path in folder.rglob("*")
             if path.is_file()]
    assert len(files) > 10 and not [path for path in files if password.encode() in path.read_bytes()]
    plain = make_cfg(tmp_path / "results", *cell[1:-1])
    from benchmark.cell import prepare

    assert run.data.tags["cell_hash"] == prepare(plain)[0]  # tracking_uri is run-only: the hash never sees it


@pytest.mark.parametrize("host, admin_password, refused", [
    ("0.0.0.0", None, True),  # beyond loopback without the admin's password: no server at all
    ("0.0.0.0", "a-long-admin-password", False),  # beyond loopback: MLflow's basic-auth app
    ("127.0.0.1", None, False),  # loopback: open to this machine's users
])
def test_server_beyond_loopback_is_the_authenticated_app_or_refused(tmp_path, monkeypatch, host, admin_password,
                                                                    refused):
    from benchmark.tools import server

    monkeypatch.delenv("MLFLOW_AUTH_ADMIN_PASSWORD", raising=False)
    if admin_password:
        monkeypatch.setenv("MLFLOW_AUTH_ADMIN_PASSWORD", admin_password)
    args = ["--backend-store-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", "--artifacts-destination",
            str(tmp_path / "mlartifacts"), "--auth-dir", str(tmp_path / "auth"), "--host", host]
    monkeypatch.setattr(server.os, "execve", lambda path, command, env: (_ for _ in ()).throw(
        SystemExit((command, env))))
    with pytest.raises(SystemExit) as done:
        server.main(args)
    if refused:
        assert done.value.code == server.EXIT_REFUSED and not (tmp_path / "auth").exists()
        return
    command, env = done.value.code
    assert ("--app-name" in command) == (host == "0.0.0.0")
    if host == "0.0.0.0":
        settings = Path(env["MLFLOW_AUTH_CONFIG_PATH"]).read_text()
        assert "authorization_function = mlflow.server.auth:authenticate_request_basic_auth" in settings
        assert f"database_uri = sqlite:///{tmp_path / 'auth' / 'users.db'}" in settings
        assert len(env["MLFLOW_FLASK_SERVER_SECRET_KEY"]) >= 32


# ---------------------------------------------------------------- the store: unusable, copied, stale runs

def test_unusable_store_fails_in_seconds_with_one_line_naming_it(tmp_path, store):
    closed_port = _free_port()  # nothing listens there
    damaged = bytearray((store.results / "mlflow.db").read_bytes())
    damaged[100:8000] = bytes(range(256)) * 31 + bytes(range(204))  # sqlite_master's page overwritten
    other = tmp_path / "other" / "mlflow.db"
    other.parent.mkdir()
    with contextlib.closing(sqlite3.connect(other)) as db:
        db.execute("CREATE TABLE notes (text TEXT)")
    cases = {"not-a-db": (b"results of another tool\n", "is not an SQLite database: restore it from a backup, or "
                                                          "move it aside"),
             "damaged": (bytes(damaged), r"is damaged \(.*\): restore it from a backup, or move it aside")}
    for name, (content, message) in cases.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "mlflow.db").write_bytes(content)
    cases["other"] = (None, "is an SQLite database but not an MLflow store")
    for name, (_, message) in cases.items():
        uri = tracking_store.default_tracking_uri(tmp_path / name)
        with pytest.raises(tracking_store.StoreUnavailable, match=f"^tracking store {re.escape(uri)}: .*{message}"):
            tracking.setup_experiment(uri, "x", tmp_path / name / "mlartifacts")
    assert (tmp_path / "not-a-db" / "mlflow.db").read_bytes() == b"results of another tool\n"  # left as it was
    uri = f"http://127.0.0.1:{closed_port}"
    started = time.monotonic()
    with pytest.raises(tracking_store.StoreUnavailable, match=f"^tracking server {uri} is unreachable .*refused"):
        tracking.setup_experiment(uri, "x", tmp_path / "mlartifacts")
    assert time.monotonic() - started < tracking_store.PROBE_TIMEOUT_S + 1


def test_grid_against_an_unreachable_server_stops_before_any_cell_with_exit_code_2(tmp_path):
    uri = f"http://127.0.0.1:{_free_port()}"
    done = subprocess.run([sys.executable, "-m", "benchmark.run", "-m", *tiny_store.GRID, f"results_dir={tmp_path}",
                           f"tracking_uri={uri}", f"hydra.sweep.dir={tmp_path / 'sweep'}"], cwd=tiny_store.ROOT,
                          env=cli_env(), capture_output=True, text=True, timeout=300)
    output = done.stdout + done.stderr
    assert done.returncode == 2, output[-3000:]
    assert f"tracking server {uri} is unreachable" in output and "Traceback" not in output
    assert not (tmp_path / "sweep" / "cells.jsonl").exists()  # no cell started


def test_copied_results_dir_is_refused_until_relocated_then_self_contained(store, tmp_path):
    copy = tmp_path / "results2"
    subprocess.run(["cp", "-a", str(store.results), str(copy)], check=True)
    original = sorted(str(p) for p in (store.results / "mlartifacts").rglob("*"))
    uri = tracking_store.default_tracking_uri(copy)
    with pytest.raises(tracking_store.StoreUnavailable) as refused:
        tracking.setup_experiment(uri, store.experiment, copy / "mlartifacts")
    message = str(refused.value)
    assert (store.results / "mlartifacts").as_uri() in message and str(copy) in message
    assert f"python -m benchmark.tracking relocate {copy}" in message

    assert tracking.relocate(copy) > tiny_store.N_CELLS  # every experiment and run of the copy
    experiment_id = tracking.setup_experiment(uri, store.experiment, copy / "mlartifacts")
    client = MlflowClient(uri)
    cells = cell_runs(client, experiment_id)
    assert len(cells) == tiny_store.N_CELLS and all(r.info.artifact_uri.startswith(copy.as_uri()) for r in cells)
    assert {a.path for a in client.list_artifacts(cells[0].info.run_id)} >= {"config.yaml", "model"}  # the copy's
    client.log_text(cells[0].info.run_id, "new", "note.txt")
    assert (copy / "mlartifacts" / store.experiment / cells[0].info.run_id / "artifacts" / "note.txt").exists()
    assert sorted(str(p) for p in (store.results / "mlartifacts").rglob("*")) == original  # untouched
    assert MlflowClient(store.uri).get_experiment_by_name(store.experiment).artifact_location.startswith(
        store.results.as_uri())


def test_runs_left_running_are_killed_only_when_their_lock_is_free(tmp_path):
    from filelock import FileLock

    uri = tracking_store.default_tracking_uri(tmp_path)
    experiment_id = tracking.setup_experiment(uri, "stale", tmp_path / "mlartifacts")
    client = MlflowClient(uri)
    (tmp_path / "locks").mkdir()
    dead_cell = client.create_run(experiment_id, tags={"cell_hash": "dead"}).info.run_id
    live_cell = client.create_run(experiment_id, tags={"cell_hash": "live"}).info.run_id
    dead_grid = client.create_run(experiment_id, tags={"grid": "true"}).info.run_id
    live_grid = client.create_run(experiment_id, tags={"grid": "true"}).info.run_id
    elsewhere = client.create_run(experiment_id, tags={"cell_hash": "no-lock-here"}).info.run_id
    finished = client.create_run(experiment_id, tags={"cell_hash": "dead"}).info.run_id
    client.set_terminated(finished, "FINISHED")
    for lock in (tracking.cell_lock_path(tmp_path, "dead"), tracking.grid_lock_path(tmp_path, dead_grid)):
        lock.touch()  # what a killed process leaves: the lock file, held by nobody
    held = [FileLock(tracking.cell_lock_path(tmp_path, "live")), FileLock(tracking.grid_lock_path(tmp_path, live_grid))]
    for lock in held:
        lock.acquire()
    try:
        closed = tracking.close_stale_runs(experiment_id, tmp_path)
    finally:
        for lock in held:
            lock.release()
    assert sorted(closed) == sorted([dead_cell, dead_grid])
    status = {run_id: client.get_run(run_id).info.status for run_id in
              (dead_cell, live_cell, dead_grid, live_grid, elsewhere, finished)}
    assert status == {dead_cell: "KILLED", live_cell: "RUNNING", dead_grid: "KILLED", live_grid: "RUNNING",
                      elsewhere: "RUNNING", finished: "FINISHED"}
    assert "left RUNNING" in client.get_run(dead_cell).data.tags[tracking.KILLED_REASON_TAG]


def test_dataset_inputs_are_retried_when_a_concurrent_cell_created_the_same_dataset(monkeypatch):
    """On a PostgreSQL-backed server, cells running at once that log the same new dataset race on its unique key;
    the losers' log_input fails once (seen in `make test-scale`'s engine grids) and must not fail the cell."""
    import mlflow
    import numpy as np
    from mlflow.exceptions import MlflowException

    from benchmark.data import from_arrays

    calls = []

    def log_input(dataset, context):
        calls.append(context)
        if len(calls) == 1:
            raise MlflowException("duplicate key value violates unique constraint \"uq_dataset\"")

    monkeypatch.setattr(mlflow, "log_input", log_input)
    monkeypatch.setattr(time, "sleep", lambda seconds: None)
    x, y = np.zeros((20, 1, 4, 4), np.float32), np.arange(20) % 2
    data = from_arrays("toy", x, y, x, y, 2)
    tracking.log_datasets("toy", data, data)
    assert calls == ["train", "train", "eval"]
