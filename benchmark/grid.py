"""Hydra callback for grids: create the tracking store and a parent run before any cell, count the cells,
and print a summary (finished / skipped / failed, with the failed ones named) at the end."""
from __future__ import annotations

import json
import logging
import os
from collections import Counter
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from benchmark import tracking

GRID_SIZE_ENV = "PRUNESEC_GRID_SIZE"
CELLS_FILE = "cells.jsonl"
log = logging.getLogger("benchmark")


def grid_size(config: DictConfig) -> int:
    """Number of cells Hydra's basic sweeper will launch: the product of the sweep lengths."""
    params = config.hydra.sweeper.get("params")  # None or empty without an experiment preset
    params = OmegaConf.to_container(params, resolve=False) if params else {}
    overrides = [f"{k}={v}" for k, v in params.items()] + list(config.hydra.overrides.task)
    size = 1
    for override in OverridesParser.create().parse_overrides(overrides):
        if override.is_sweep_override():
            size *= len(list(override.sweep_iterator()))
    return size


class GridCallback(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        results = Path(config.results_dir).resolve()
        uri = config.tracking_uri or tracking.default_tracking_uri(results)
        results.mkdir(parents=True, exist_ok=True)
        experiment_id = tracking.setup_experiment(uri, config.experiment_name, results / "mlartifacts")
        parent = MlflowClient().create_run(experiment_id, run_name=f"grid:{config.experiment_name}",
                                           tags={"grid": "true", **tracking.provenance_tags()})
        os.environ[tracking.PARENT_RUN_ENV] = parent.info.run_id
        os.environ[GRID_SIZE_ENV] = str(grid_size(config))
        log.info("grid %r: %s cells, parent run %s, store %s", config.experiment_name,
                 os.environ[GRID_SIZE_ENV], parent.info.run_id, uri)

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        ledger = Path(config.hydra.sweep.dir) / CELLS_FILE
        cells = [json.loads(line) for line in ledger.read_text().splitlines()] if ledger.exists() else []
        counts = Counter(cell["status"] for cell in cells)
        failed = [cell for cell in cells if cell["status"] == "failed"]
        parent_id = os.environ.pop(tracking.PARENT_RUN_ENV, None)
        if parent_id:
            MlflowClient().set_terminated(parent_id, "FAILED" if failed else "FINISHED")
        log.info("grid done: %d finished, %d skipped (already finished), %d failed", counts["finished"],
                 counts["skipped"], counts["failed"])
        for cell in failed:
            log.error("  failed: %s: %s", cell["run"], cell["error"])
