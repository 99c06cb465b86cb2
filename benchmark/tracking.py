"""MLflow: the only record of results. Opening (probing, creating) the store, experiment setup, finished-cell
lookup, one run per cell, and closing runs whose process died."""
from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import os
import platform
import sqlite3
import time
from pathlib import Path

import mlflow
from filelock import FileLock, Timeout
from mlflow.tracking import MlflowClient

from benchmark.tracking_store import (
    StoreUnavailable,
    default_tracking_uri,
    open_store,
    probe_store,
    redact,
    sqlite_path,
)
from benchmark.version import RESULTS_VERSION, git_state

PACKAGES = ["torch", "torchvision", "torch-pruning", "adversarial-robustness-toolbox", "hydra-core", "mlflow",
            "numpy", "pandas", "scikit-learn"]
PARENT_RUN_ENV = "PRUNESEC_PARENT_RUN_ID"
# The MLflow UI opens an experiment of this kind on its training runs (not on the GenAI traces overview).
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}
KILLED_REASON_TAG = "killed_reason"
# A run inside a Slurm job is tagged with its job id (scancel and sacct name an array task ARRAY_TASK, not by it)
SLURM_JOB_VARIABLES = ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID")


# ---------------------------------------------------------------------------------------------- experiments
def setup_experiment(tracking_uri: str, name: str, artifact_root: str | Path) -> str:
    """Open the store (see open_store) and create the experiment if needed; returns the experiment id.

    The experiment keeps its artifacts in `<artifact_root>/<name>`. An existing experiment of a SQLite store kept
    under artifact_root's parent (the results dir) must have them there too: a copied results dir whose store still
    points into the original's folder is refused (StoreUnavailable) instead of writing into the original."""
    open_store(tracking_uri)
    if redact(tracking_uri) != tracking_uri:  # MLflow prints each run's link with the URI's userinfo in it
        os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
    mlflow.set_tracking_uri(tracking_uri)
    client = MlflowClient()
    artifact_root = Path(artifact_root).resolve()
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        # not ./mlruns of the current directory; a server stores them itself (proxied: workers need no shared disk)
        server = tracking_uri.startswith(("http://", "https://"))
        artifact_location = None if server else (artifact_root / name).as_uri()
        try:
            return client.create_experiment(name, artifact_location=artifact_location, tags=EXPERIMENT_KIND)
        except mlflow.exceptions.MlflowException:  # created meanwhile by another worker
            experiment = client.get_experiment_by_name(name)
    _check_artifact_location(tracking_uri, experiment, artifact_root)
    if any(experiment.tags.get(key) != value for key, value in EXPERIMENT_KIND.items()):
        for key, value in EXPERIMENT_KIND.items():
            client.set_experiment_tag(experiment.experiment_id, key, value)
    return experiment.experiment_id


def _check_artifact_location(tracking_uri: str, experiment, artifact_root: Path) -> None:
    store = sqlite_path(tracking_uri)
    if store is None or store.resolve().parent != artifact_root.parent:
        return  # a shared store (a server, another file): its experiments may serve several results dirs
    location = experiment.artifact_location
    if location.startswith(artifact_root.as_uri() + "/"):
        return
    raise StoreUnavailable(
        f"experiment {experiment.name!r} of {store} keeps its artifacts in {location}, outside this results dir "
        f"({artifact_root.parent}): the store was copied or moved from another results dir, and new artifacts would "
        f"land there. Run `python -m benchmark.tracking relocate {artifact_root.parent}` to point the store at its "
        f"own {artifact_root.name}/, or use the original results_dir")


def relocate(results_dir: str | Path) -> int:
    """Point a copied results dir's SQLite store at its own artifacts: every experiment location and run artifact
    URI under another `<dir>/mlartifacts/` is rewritten to this `<results_dir>/mlartifacts/` (MLflow keeps them
    absolute and has no API to change them). Returns the number of rows rewritten."""
    results = Path(results_dir).resolve()
    store, new_root = results / "mlflow.db", (results / "mlartifacts").as_uri() + "/"
    if not probe_store(default_tracking_uri(results)):
        raise StoreUnavailable(f"no MLflow store at {store}")
    rewritten = 0
    with contextlib.closing(sqlite3.connect(store, timeout=30)) as db, db:
        for (location,) in db.execute("SELECT artifact_location FROM experiments").fetchall():
            old_root = location[: location.rfind("/mlartifacts/") + len("/mlartifacts/")]
            if "/mlartifacts/" not in location or old_root == new_root:
                continue
            for table, column in (("experiments", "artifact_location"), ("runs", "artifact_uri")):
                rewritten += db.execute(
                    f"UPDATE {table} SET {column} = ? || substr({column}, ?) WHERE substr({column}, 1, ?) = ?",
                    (new_root, len(old_root) + 1, len(old_root), old_root)).rowcount
    return rewritten


FINISHED = "attributes.status = 'FINISHED'"


def find_finished_run(experiment_id: str, cell_hash: str) -> str | None:
    runs = MlflowClient().search_runs([experiment_id], filter_string=f"tags.cell_hash = '{cell_hash}' and {FINISHED}",
                                      max_results=1)
    return runs[0].info.run_id if runs else None


def finished_cells(tracking_uri: str, experiment: str) -> dict[str, tuple[str, str]]:
    """Cell hash -> (run id, run name) of the experiment's FINISHED cell runs, in one query. Creates nothing: {}
    when the store or the experiment does not exist yet. Raises StoreUnavailable as open_store does."""
    if not probe_store(tracking_uri):
        return {}
    mlflow.set_tracking_uri(tracking_uri)
    found = MlflowClient().get_experiment_by_name(experiment)
    if found is None:
        return {}
    runs = mlflow.search_runs(experiment_ids=[found.experiment_id], filter_string=FINISHED, output_format="list")
    return {run.data.tags["cell_hash"]: (run.info.run_id, run.info.run_name)
            for run in runs if "cell_hash" in run.data.tags}


# ---------------------------------------------------------------------------------------------- runs left RUNNING
def cell_lock_path(results_dir: str | Path, cell_hash: str) -> Path:
    """The lock a cell holds while it runs (benchmark.cell.run_cell)."""
    return Path(results_dir) / "locks" / f"{cell_hash}.lock"


def grid_lock_path(results_dir: str | Path, parent_run_id: str) -> Path:
    """The lock a grid holds while it runs (benchmark.grid.GridCallback)."""
    return Path(results_dir) / "locks" / f"grid-{parent_run_id}.lock"


def close_stale_runs(experiment_id: str, results_dir: str | Path) -> list[str]:
    """Mark KILLED the runs of an experiment left RUNNING by a process that died (SIGKILL, power loss); returns
    their run ids. A run is stale when the lock its process held (its cell's, or its grid's for a grid parent run)
    exists in this results dir and nobody holds it. The lock is held while the status is re-read and changed, so a
    run that finishes meanwhile keeps its status. Runs whose lock is not in this results dir (started on another
    machine against a shared tracking server, with another results dir) are left alone: they cannot be told apart
    from live ones from here."""
    client = MlflowClient()
    running = client.search_runs([experiment_id], "attributes.status = 'RUNNING'", max_results=10000)
    closed = []
    for run in running:
        tags = run.data.tags
        if tags.get("grid") == "true":
            lock = grid_lock_path(results_dir, run.info.run_id)
        elif "cell_hash" in tags:
            lock = cell_lock_path(results_dir, tags["cell_hash"])
        else:
            continue
        if not lock.exists():
            continue
        try:
            with FileLock(lock, blocking=False):
                if client.get_run(run.info.run_id).info.status != "RUNNING":
                    continue
                client.set_tag(run.info.run_id, KILLED_REASON_TAG,
                               f"left RUNNING by a process that ended without closing it (its lock {lock.name} was "
                               f"free when a grid started at {time.strftime('%Y-%m-%d %H:%M:%S %Z')})")
                client.set_terminated(run.info.run_id, "KILLED")
                closed.append(run.info.run_id)
        except Timeout:  # held: the run is alive
            continue
    return closed


def flatten(d: dict, prefix: str = "") -> dict[str, str]:
    """Nested config -> MLflow params (dotted keys, values as text, URI userinfo masked)."""
    out = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = redact(str(value))
    return out


@functools.lru_cache(maxsize=1)
def provenance_tags() -> dict[str, str]:
    """git commit (+ dirty flag), package versions and host: what a reader needs to trust a number."""
    commit, dirty = git_state()
    tags = {"git_commit": commit, "git_dirty": str(dirty).lower(), "host": platform.node(),
            "python": platform.python_version(), "results_version": str(RESULTS_VERSION)}
    tags.update({key.lower(): os.environ[key] for key in SLURM_JOB_VARIABLES if key in os.environ})
    for package in PACKAGES:
        try:
            tags[f"version.{package}"] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            pass
    return tags


@contextlib.contextmanager
def cell_run(experiment_id: str, run_name: str, tags: dict[str, str], parent_run_id: str | None):
    """An MLflow run that ends FINISHED only if the body completes; FAILED on error, KILLED on Ctrl-C.

    A process killed outright leaves the run RUNNING, which is not FINISHED, so the cell is redone next time."""
    run = mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=tags, parent_run_id=parent_run_id)
    try:
        yield run
    except KeyboardInterrupt:
        mlflow.end_run("KILLED")
        raise
    except BaseException as err:
        mlflow.set_tag("error", redact(f"{type(err).__name__}: {err}")[:5000])
        mlflow.end_run("FAILED")
        raise
    else:
        mlflow.end_run("FINISHED")


def log_datasets(dataset_name: str, data, train) -> None:
    """The cell's data as MLflow dataset inputs (the UI's "Datasets" column): the set the dense model trained on
    (context `train`, poisoned by the threat when it poisons) and the test split (`eval`). The digest is MLflow's
    hash of the arrays, so a different split, seed or poisoning shows as a different dataset."""
    import mlflow.data

    poisoned = train.x_train is not data.x_train or train.y_train is not data.y_train
    for split, x, y, context in (("train" + ("-poisoned" if poisoned else ""), train.x_train, train.y_train, "train"),
                                 ("test", data.x_test, data.y_test, "eval")):
        dataset = mlflow.data.from_numpy(x.numpy(), targets=y.numpy(), name=f"{dataset_name}-{split}")
        _log_input(dataset, context)


def _log_input(dataset, context: str, attempts: int = 3) -> None:
    """mlflow.log_input, retried: cells running at once that log the same new dataset race on the store's unique
    key (experiment, name, digest), and all but one fail; a retry finds the dataset the other cell created."""
    from mlflow.exceptions import MlflowException

    for attempt in range(1, attempts + 1):
        try:
            mlflow.log_input(dataset, context=context)
            return
        except MlflowException:
            if attempt == attempts:
                raise
            time.sleep(0.5 * attempt)


# appended to ui_url's link: the same view, on its charts instead of its runs table
UI_CHARTS = "&compareRunsMode=CHART"


def ui_url(tracking_uri: str, experiment: str, port: int) -> str:
    """The MLflow UI's page of an experiment's cells: the runs table of the saved view benchmark.ui_view writes,
    rewritten here from the store's cells (+ UI_CHARTS: its charts). MLflow 3's UI picks GenAI or model-training
    pages from its own switch (remembered by the browser, GenAI by default), not from the experiment: the link sets
    it. An experiment not in the store yet: the experiments list."""
    from benchmark.ui_view import write_cells_view

    open_store(tracking_uri)
    client = MlflowClient(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return f"http://127.0.0.1:{port}/#/experiments?workflowType=machine_learning"
    view = write_cells_view(client, found.experiment_id)
    return (f"http://127.0.0.1:{port}/#/experiments/{found.experiment_id}/runs?viewStateShareKey={view}"
            f"&workflowType=machine_learning")


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description="Maintenance of a results dir's MLflow store.")
    commands = parser.add_subparsers(dest="command", required=True)
    relocate_cmd = commands.add_parser("relocate", help=relocate.__doc__.splitlines()[0])
    relocate_cmd.add_argument("results_dir")
    url_cmd = commands.add_parser("ui-url", help=ui_url.__doc__.splitlines()[0])
    url_cmd.add_argument("tracking_uri")
    url_cmd.add_argument("experiment")
    url_cmd.add_argument("port", type=int)
    args = parser.parse_args(argv)
    try:
        if args.command == "relocate":
            rewritten = relocate(args.results_dir)
            print(f"{rewritten} artifact locations now under {Path(args.results_dir).resolve() / 'mlartifacts'}")
        else:
            link = ui_url(args.tracking_uri, args.experiment, args.port)
            if "viewStateShareKey" in link:
                print(f"MLflow UI, experiment {args.experiment!r}: its cells {link}")
                print(f"  and their charts {link}{UI_CHARTS}")
            else:
                print(f"MLflow UI: no experiment {args.experiment!r} in the store yet: {link}")
    except StoreUnavailable as err:
        raise SystemExit(f"error: {err}") from None


if __name__ == "__main__":
    main()
