"""MLflow: the only record of results. Store/experiment setup, finished-cell lookup, and one run per cell."""
from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import os
import platform
from pathlib import Path

import mlflow
from mlflow.tracking import MlflowClient

from benchmark.version import RESULTS_VERSION, git_state

PACKAGES = ["torch", "torchvision", "torch-pruning", "adversarial-robustness-toolbox", "hydra-core", "mlflow",
            "numpy", "pandas", "scikit-learn"]
PARENT_RUN_ENV = "PRUNESEC_PARENT_RUN_ID"
# A run inside a Slurm job is tagged with its job id (scancel and sacct name an array task ARRAY_TASK, not by it)
SLURM_JOB_VARIABLES = ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID")


def default_tracking_uri(results_dir: str | Path) -> str:
    return f"sqlite:///{Path(results_dir).resolve() / 'mlflow.db'}"


def setup_experiment(tracking_uri: str, name: str, artifact_root: str | Path) -> str:
    """Create the store (schema migrations) and the experiment if needed; returns the experiment id.

    Call once in the parent before parallel workers start: concurrent first-time migrations corrupt SQLite."""
    mlflow.set_tracking_uri(tracking_uri)
    client = MlflowClient()
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    # not ./mlruns of the current directory; a server stores them itself (proxied: workers need no shared disk)
    server = tracking_uri.startswith(("http://", "https://"))
    artifact_location = None if server else (Path(artifact_root).resolve() / name).as_uri()
    try:
        return client.create_experiment(name, artifact_location=artifact_location)
    except mlflow.exceptions.MlflowException:  # created meanwhile by another worker
        return client.get_experiment_by_name(name).experiment_id


def find_finished_run(experiment_id: str, cell_hash: str) -> str | None:
    runs = MlflowClient().search_runs(
        [experiment_id], filter_string=f"tags.cell_hash = '{cell_hash}' and attributes.status = 'FINISHED'", max_results=1
    )
    return runs[0].info.run_id if runs else None


def flatten(d: dict, prefix: str = "") -> dict[str, str]:
    out = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = str(value)
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
        mlflow.set_tag("error", f"{type(err).__name__}: {err}"[:5000])
        mlflow.end_run("FAILED")
        raise
    else:
        mlflow.end_run("FINISHED")
