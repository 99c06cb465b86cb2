"""Log N cells' worth of MLflow runs the way a cell does (benchmark.tracking.cell_run, one params batch, one metrics
batch, a step curve, config.yaml and a small weights artifact), for the concurrency test and the logging timings.

    python tests/scale/log_runs.py TRACKING_URI EXPERIMENT WORKER N RESULTS_DIR

Cell hashes are sha256("WORKER-i"), so the expected set is known to the caller. Prints one JSON line: the worker,
its run ids and the median seconds per run."""
from __future__ import annotations

import hashlib
import json
import statistics
import sys
import time
from pathlib import Path

import mlflow
from mlflow.entities import Metric

from benchmark import tracking


def cell_hash(worker: str, index: int) -> str:
    return hashlib.sha256(f"{worker}-{index}".encode()).hexdigest()[:16]


def main(uri: str, experiment: str, worker: str, n: int, results_dir: str) -> None:
    experiment_id = tracking.setup_experiment(uri, experiment, Path(results_dir) / "mlartifacts")
    run_ids, seconds = [], []
    for index in range(n):
        started = time.perf_counter()
        tags = {"cell_hash": cell_hash(worker, index), "worker": worker, **tracking.provenance_tags()}
        with tracking.cell_run(experiment_id, f"{worker}|cell{index}", tags, None) as run:
            mlflow.log_params({f"param.{k}": f"{worker}-{index}-{k}" for k in range(30)})
            mlflow.log_metrics({f"metric/{k}": index + k / 100 for k in range(40)})
            now = int(time.time() * 1000)
            mlflow.MlflowClient().log_batch(run.info.run_id, metrics=[
                Metric("robust/curve", 1.0 - step / 10, now, step) for step in range(10)])
            mlflow.log_text(f"worker: {worker}\nindex: {index}\n", "config.yaml")
            mlflow.log_text("0" * 4096, "model/weights.txt")
        seconds.append(time.perf_counter() - started)
        run_ids.append(run.info.run_id)
    print(json.dumps({"worker": worker, "run_ids": run_ids, "median_s_per_run": statistics.median(seconds)}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5])
