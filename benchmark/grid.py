"""Hydra callback for grids: open the tracking store and create a parent run before any cell (closing runs that
killed grids left RUNNING), count the cells, and at the end log the grid's figures and tables to the parent run and
print a summary (finished / skipped / failed, with the failed ones named)."""
from __future__ import annotations

import json
import logging
import os
import tempfile
from collections import Counter
from pathlib import Path

from filelock import FileLock
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from hydra.experimental.callback import Callback
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from benchmark import tracking
from benchmark.validate import ConfigError

GRID_SIZE_ENV = "PRUNESEC_GRID_SIZE"
CELLS_FILE = "cells.jsonl"
log = logging.getLogger("benchmark")
# The lock each running grid holds (by parent run id), in this process only: the callback itself is pickled to
# joblib workers, a lock cannot be.
_grid_locks: dict[str, FileLock] = {}


def _sweep_overrides(config: DictConfig) -> list[str]:
    """The sweep as Hydra's basic sweeper reads it: the preset's sweeper.params, then the command line."""
    params = config.hydra.sweeper.get("params")  # None or empty without an experiment preset
    params = OmegaConf.to_container(params, resolve=False) if params else {}
    return [f"{k}={v}" for k, v in params.items()] + list(config.hydra.overrides.task)


def job_overrides(config: DictConfig) -> tuple[list[list[str]], set[str]]:
    """Every job's override list, expanded exactly as Hydra's BasicSweeper does it, and the swept keys."""
    parsed = OverridesParser.create().parse_overrides(_sweep_overrides(config))
    swept = {o.get_key_element() for o in parsed if o.is_sweep_override()}
    return BasicSweeper.split_arguments(parsed, None)[0], swept


def validate_grid(config: DictConfig) -> list[str]:
    """Compose and validate every cell of the sweep before any runs; returns one message per bad cell.

    About 70 ms per job (Hydra compose + building the model): ~6 s for the default grid's 84 jobs."""
    from hydra import compose

    from benchmark.cell import prepare

    errors = []
    jobs, swept = job_overrides(config)
    for overrides in jobs:
        try:
            prepare(compose(config_name=config.hydra.job.config_name, overrides=overrides))
        except (ConfigError, HydraException) as err:  # HydraException: e.g. an unknown config-group option
            cell = " ".join(o for o in overrides if o.split("=", 1)[0] in swept)
            errors.append(f"cell {cell or '(the only one)'}: {err}")
    return errors


def grid_size(config: DictConfig) -> int:
    """Number of jobs Hydra's basic sweeper will launch (a command-line sweep replaces the preset's for its key)."""
    return len(job_overrides(config)[0])


class GridCallback(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        # Hydra turns a callback's Exception into a warning and runs the grid anyway: SystemExit stops it.
        if config.hydra.sweeper._target_.endswith("BasicSweeper") and (errors := validate_grid(config)):
            log.error("grid rejected before any cell ran: %d bad cell(s)\n  %s", len(errors), "\n  ".join(errors))
            raise SystemExit(2)
        self._start_parent_run(config)

    def _start_parent_run(self, config: DictConfig) -> None:
        """Open the store (exit code 2 with one line if it is unusable), close runs earlier grids left RUNNING, and
        create this grid's parent run, holding the grid lock until the grid ends."""
        results = Path(config.results_dir).resolve()
        self._uri = config.tracking_uri or tracking.default_tracking_uri(results)
        try:
            (results / "locks").mkdir(parents=True, exist_ok=True)
            experiment_id = tracking.setup_experiment(self._uri, config.experiment_name, results / "mlartifacts")
        except OSError as err:  # tracking.StoreUnavailable, or an unwritable results_dir
            log.error("%s", err)
            raise SystemExit(2) from None
        if stale := tracking.close_stale_runs(experiment_id, results):
            log.info("marked %d run(s) KILLED that an earlier process left RUNNING: %s", len(stale), ", ".join(stale))
        parent = MlflowClient().create_run(experiment_id, run_name=f"grid:{config.experiment_name}",
                                           tags={"grid": "true", **tracking.provenance_tags()})
        _grid_locks[parent.info.run_id] = FileLock(tracking.grid_lock_path(results, parent.info.run_id))
        _grid_locks[parent.info.run_id].acquire()
        os.environ[tracking.PARENT_RUN_ENV] = parent.info.run_id
        os.environ[GRID_SIZE_ENV] = str(grid_size(config))
        log.info("grid %r: %s cells, parent run %s, store %s", config.experiment_name,
                 os.environ[GRID_SIZE_ENV], parent.info.run_id, self._uri)

    def _end_parent_run(self, config: DictConfig, parent_id: str, cells: list[dict], status: str) -> None:
        """Log the grid's figures and tables to its parent run, close it, and release the grid lock."""
        try:
            _log_grid_artifacts(self._uri, config.experiment_name, parent_id, cells)
        except Exception as err:  # noqa: BLE001 - figures are a view of the results; they never fail the grid
            log.warning("grid figures not logged to the parent run: %s: %s", type(err).__name__, err)
        MlflowClient().set_terminated(parent_id, status)
        lock = _grid_locks.pop(parent_id)
        lock.release()
        Path(lock.lock_file).unlink(missing_ok=True)

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        ledger = Path(config.hydra.sweep.dir) / CELLS_FILE
        cells = [json.loads(line) for line in ledger.read_text().splitlines()] if ledger.exists() else []
        counts = Counter(cell["status"] for cell in cells)
        failed = [cell for cell in cells if cell["status"] == "failed"]
        parent_id = os.environ.pop(tracking.PARENT_RUN_ENV, None)
        if parent_id:
            self._end_parent_run(config, parent_id, cells, "FAILED" if failed else "FINISHED")
        log.info("grid done: %d finished, %d skipped (already finished), %d failed", counts["finished"],
                 counts["skipped"], counts["failed"])
        for cell in failed:
            log.error("  failed: %s: %s", cell["run"], cell["error"])


GRID_FIGURES = ("robust_vs_sparsity", "clean_vs_sparsity", "backdoor_asr_vs_sparsity")


def _log_grid_artifacts(uri: str, experiment: str, parent_id: str, cells: list[dict]) -> None:
    """The grid's own cells (run now or skipped as already finished) as figures (robust and clean accuracy, backdoor
    ASR vs sparsity) and tables, logged to the parent run, so the MLflow UI shows the curves on the grid's run."""
    from benchmark import figures  # matplotlib and scipy: imported when a grid ends, not by every cell

    run_ids = {cell["run_id"] for cell in cells if cell["status"] in ("finished", "skipped")}
    frame = figures.tidy(figures.load_runs(uri, experiment))
    frame = frame[frame[figures.RUN_ID].isin(run_ids)].reset_index(drop=True)
    if frame.empty:
        return
    specs = [spec for spec in figures.FIGURES if spec.name in GRID_FIGURES]
    with tempfile.TemporaryDirectory(prefix="grid-artifacts-") as out:
        figures.write_figures(frame, Path(out) / "figures", specs)
        figures.write_tables(frame, Path(out) / "tables")
        MlflowClient().log_artifacts(parent_id, out)
