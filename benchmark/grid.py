"""Hydra callback for grids: check every cell, open the tracking store and create a parent run before any cell
(closing runs that killed grids left RUNNING), count the cells, and at the end log the grid's figures and tables to
the parent run and print a summary (finished / skipped / failed, with the failed ones named).

The grid's exit code (see benchmark/run.py): 2 when the pre-check rejects it (nothing has run), 1 when a cell
failed or never reported, else 0. It works alike with every launcher: the callback runs in the process that
launched the grid and reads the ledger (cells.jsonl) the cells append to, wherever they ran."""
from __future__ import annotations

import functools
import json
import logging
import os
import sys
import tempfile
from collections import Counter
from pathlib import Path

from filelock import FileLock
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from benchmark.validate import ConfigError, check_config

GRID_SIZE_ENV = "PRUNESEC_GRID_SIZE"
CELLS_FILE = "cells.jsonl"
SKIPS_FILE = "finished_before.json"  # jobs whose cell was FINISHED when the grid started
EXIT_FAILED = 1  # some cell failed
EXIT_REJECTED = 2  # the config was rejected before any compute
log = logging.getLogger("benchmark")
started = False  # True once a grid passed its pre-check in this process
# The lock each running grid holds (by parent run id), in this process only: the callback itself is pickled to
# joblib workers, a lock cannot be.
_grid_locks: dict[str, FileLock] = {}


def one_line(err: BaseException) -> str:
    """An error as one line: config mistakes as they are, Hydra's multi-line messages joined (a list of options
    after a colon becomes comma-separated), other errors with their type; the first line of the cause is added
    when the message does not already hold it (it often names the key)."""
    text, in_list = "", False
    for line in (line.strip() for line in str(err).splitlines()):
        if not line or line.startswith(("full_key:", "object_type=", "reference_type=")):
            continue
        if not text:
            text = line
        elif text.endswith(":"):
            text, in_list = f"{text} {line}", True
        elif in_list and " " not in line:  # Hydra lists a group's options one per line
            text += f", {line}"
        elif line.startswith("Config search path:"):  # Hydra's search path: noise for a config mistake
            break
        else:
            text, in_list = f"{text}{' ' if text.endswith('.') else '; '}{line}", False
    cause = str(err.__cause__ or "").strip().splitlines()
    if cause and cause[0] not in text:
        text += f" ({cause[0]})"
    return text if isinstance(err, (ConfigError, HydraException)) else f"{type(err).__name__}: {text}"


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


def _cell_label(overrides: list[str], swept: set[str]) -> str:
    return " ".join(o for o in overrides if o.split("=", 1)[0] in swept) or "(the only one)"


def validate_grid(config: DictConfig) -> tuple[list[str], list[tuple[str, str, bool]]]:
    """Compose and check every cell of the sweep before any runs; returns one message per bad cell and, when there
    is none, each job's (cell hash, run name, force).

    Two passes: the checks without torch for every cell (a mistake anywhere is reported before the heavy imports),
    then those that need torch (building each cell's model)."""
    from hydra import compose

    errors, composed = [], []
    jobs, swept = job_overrides(config)
    for overrides in jobs:
        try:
            cfg = compose(config_name=config.hydra.job.config_name, overrides=overrides)
            check_config(cfg)
            composed.append((overrides, cfg))
        except Exception as err:  # noqa: BLE001 - whatever goes wrong, the grid must not start
            errors.append(f"cell {_cell_label(overrides, swept)}: {one_line(err)}")
    if errors:
        return errors, []
    from benchmark.cell import prepare

    cells = []
    for overrides, cfg in composed:
        try:
            cells.append((*prepare(cfg), bool(cfg.force)))
        except Exception as err:  # noqa: BLE001
            errors.append(f"cell {_cell_label(overrides, swept)}: {one_line(err)}")
    return errors, cells if not errors else []


def finished_before(sweep_dir: str, num: int) -> dict | None:
    """The job's cell as the grid found it FINISHED before it started ({cell_hash, run, run_id}), else None."""
    return _skips(sweep_dir).get(str(num))


@functools.lru_cache(maxsize=4)  # a worker process runs many jobs of one sweep
def _skips(sweep_dir: str) -> dict:
    path = Path(sweep_dir) / SKIPS_FILE
    return json.loads(path.read_text()) if path.exists() else {}


def _write_skips(config: DictConfig, experiment_id: str, cells: list[tuple[str, str, bool]]) -> int:
    """Name the jobs whose cell is already FINISHED in the store, so that they are skipped before any per-job
    work (one query for the whole grid instead of one per job); returns how many."""
    import mlflow

    runs = mlflow.search_runs(experiment_ids=[experiment_id], filter_string="attributes.status = 'FINISHED'",
                              output_format="list")
    finished = {run.data.tags.get("cell_hash"): run.info.run_id for run in runs}
    skips = {str(num): {"cell_hash": cell_hash, "run": name, "run_id": finished[cell_hash]}
             for num, (cell_hash, name, force) in enumerate(cells) if not force and cell_hash in finished}
    sweep = Path(config.hydra.sweep.dir)
    sweep.mkdir(parents=True, exist_ok=True)
    (sweep / SKIPS_FILE).write_text(json.dumps(skips))
    return len(skips)


def grid_size(config: DictConfig) -> int:
    """Number of jobs Hydra's basic sweeper will launch (a command-line sweep replaces the preset's for its key)."""
    return len(job_overrides(config)[0])


def _basic_sweeper(config: DictConfig) -> bool:
    """Hydra's own sweeper, whose jobs `job_overrides` knows (another sweeper picks its jobs as it goes)."""
    return config.hydra.sweeper._target_.endswith("BasicSweeper")


class GridCallback(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        # Hydra turns a callback's Exception into a warning and runs the grid anyway: SystemExit stops it.
        global started
        try:
            errors, cells = validate_grid(config) if _basic_sweeper(config) else ([], [])
            if errors:
                log.error("grid rejected before any cell ran: %d bad cell(s)\n  %s", len(errors), "\n  ".join(errors))
                raise SystemExit(EXIT_REJECTED)
            experiment_id = self._create_store(config)
            if cells and (skipped := _write_skips(config, experiment_id, cells)):
                log.info("grid: %d of %d jobs already finished, skipped", skipped, len(cells))
        except Exception as err:  # noqa: BLE001 - no grid without its checks, its store and its parent run
            log.error("grid rejected before any cell ran: %s", one_line(err))
            raise SystemExit(EXIT_REJECTED) from None
        started = True

    @staticmethod
    def _create_store(config: DictConfig) -> str:
        """Open the store (tracking.StoreUnavailable names why it is unusable), close runs that earlier grids left
        RUNNING, and create this grid's parent run, holding the grid lock until the grid ends."""
        from mlflow.tracking import MlflowClient

        from benchmark import tracking

        results = Path(config.results_dir).resolve()
        uri = config.tracking_uri or tracking.default_tracking_uri(results)
        (results / "locks").mkdir(parents=True, exist_ok=True)
        experiment_id = tracking.setup_experiment(uri, config.experiment_name, results / "mlartifacts")
        if stale := tracking.close_stale_runs(experiment_id, results):
            log.info("marked %d run(s) KILLED that an earlier process left RUNNING: %s", len(stale), ", ".join(stale))
        parent = MlflowClient().create_run(experiment_id, run_name=f"grid:{config.experiment_name}",
                                           tags={"grid": "true", **tracking.provenance_tags()})
        _grid_locks[parent.info.run_id] = FileLock(tracking.grid_lock_path(results, parent.info.run_id))
        _grid_locks[parent.info.run_id].acquire()
        os.environ[tracking.PARENT_RUN_ENV] = parent.info.run_id
        os.environ[GRID_SIZE_ENV] = str(grid_size(config))
        log.info("grid %r: %s cells, parent run %s, store %s", config.experiment_name,
                 os.environ[GRID_SIZE_ENV], parent.info.run_id, uri)
        return experiment_id

    @staticmethod
    def _end_parent_run(config: DictConfig, parent_id: str, cells: list[dict], status: str) -> None:
        """Log the grid's figures and tables to its parent run, close it, and release the grid lock."""
        from mlflow.tracking import MlflowClient

        from benchmark import tracking

        uri = config.tracking_uri or tracking.default_tracking_uri(Path(config.results_dir).resolve())
        try:
            _log_grid_artifacts(uri, config.experiment_name, parent_id, cells)
        except Exception as err:  # noqa: BLE001 - figures are a view of the results; they never fail the grid
            log.warning("grid figures not logged to the parent run: %s: %s", type(err).__name__, err)
        MlflowClient().set_terminated(parent_id, status)
        lock = _grid_locks.pop(parent_id, None)
        if lock is not None:
            lock.release()
            Path(lock.lock_file).unlink(missing_ok=True)

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        from benchmark import tracking

        ledger = Path(config.hydra.sweep.dir) / CELLS_FILE
        cells = [json.loads(line) for line in ledger.read_text().splitlines()] if ledger.exists() else []
        counts = Counter(cell["status"] for cell in cells)
        failed = [cell for cell in cells if cell["status"] == "failed"]
        jobs, swept = job_overrides(config)
        silent = sorted(set(range(len(jobs))) - {cell["num"] for cell in cells}) if _basic_sweeper(config) else []
        # silent: jobs without an outcome in the ledger, e.g. a worker that was killed
        parent_id = os.environ.pop(tracking.PARENT_RUN_ENV, None)
        if parent_id:
            self._end_parent_run(config, parent_id, cells, "FAILED" if failed or silent else "FINISHED")
        log.info("grid done: %d finished, %d skipped (already finished), %d failed%s", counts["finished"],
                 counts["skipped"], counts["failed"], f", {len(silent)} never reported" if silent else "")
        for cell in failed:
            log.error("  failed: %s: %s", cell["run"], cell["error"])
        for num in silent:
            log.error("  never reported: cell %d (%s)", num + 1, _cell_label(jobs[num], swept))
        if failed or silent:
            sys.exit(EXIT_FAILED)


GRID_FIGURES = ("robust_vs_sparsity", "clean_vs_sparsity", "backdoor_asr_vs_sparsity")


def _log_grid_artifacts(uri: str, experiment: str, parent_id: str, cells: list[dict]) -> None:
    """The grid's own cells (run now or skipped as already finished) as figures (robust and clean accuracy, backdoor
    ASR vs sparsity) and tables, logged to the parent run, so the MLflow UI shows the curves on the grid's run."""
    from mlflow.tracking import MlflowClient

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
