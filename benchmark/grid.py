"""Hydra callback for grids: check every cell, open the tracking store and create a parent run before any cell
(closing runs that killed grids left RUNNING), count the cells, and at the end log the grid's figures and tables to
the parent run (benchmark/grid_figures.py) and print a summary (finished / skipped / failed, with the failed ones
named).

A re-run costs little: the pre-check hashes every cell without torch, looks the hashes up in the store in one
query, and names the jobs whose cell is already FINISHED; the grid's sweeper (hydra_plugins/prunesec_grid_sweeper.py)
records them as skipped and launches only the others. Only the cells that will run get the checks that need torch.

The grid's exit code (see benchmark/run.py): 2 when the pre-check rejects it (nothing has run), 1 when a cell
failed or never reported, else 0. It works alike with every launcher: the callback runs in the process that
launched the grid and reads the ledger (cells.jsonl) the cells append to, wherever they ran."""
from __future__ import annotations

import copy
import json
import logging
import os
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from benchmark.exit_codes import EXIT_FAILED, EXIT_REJECTED, one_line
from benchmark.grid_figures import log_grid_artifacts
from benchmark.tracking_store import redact, tracking_uri_of
from benchmark.validate import check_config

GRID_SIZE_ENV = "PRUNESEC_GRID_SIZE"
CELLS_FILE = "cells.jsonl"
SKIPS_FILE = "finished_before.json"  # jobs whose cell was FINISHED when the grid started
SAME_CELL_FILE = "same_cell_as.json"  # jobs whose cell an earlier job of the grid computes
log = logging.getLogger("benchmark")
started = False  # True once a grid passed its pre-check in this process
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


def _cell_label(overrides: list[str], swept: set[str]) -> str:
    return " ".join(o for o in overrides if o.split("=", 1)[0] in swept) or "(the only one)"


@dataclass
class Job:
    """One job of the sweep as the pre-check found it: its composed, canonical config and its cell's hash."""
    num: int
    overrides: list[str]
    cfg: DictConfig
    cell_hash: str


class JobComposer:
    """Composes the jobs of one sweep as `hydra.compose` does, at a fraction of its cost: Hydra composes once per
    distinct choice of config groups, and each job's other overrides (`key=value`, `+key=`, `~key`) are applied to
    a copy of that with the function Hydra's loader itself applies them with, after composing, in the same order.
    Hydra's own class sorts a job's overrides into the two kinds."""

    def __init__(self, config_name: str) -> None:
        from hydra.core.global_hydra import GlobalHydra

        self.config_name = config_name
        self._repository = GlobalHydra.instance().config_loader().repository
        self._composed: dict[tuple[str, ...], DictConfig | Exception] = {}

    def compose(self, overrides: list[str]) -> DictConfig:
        from hydra import compose
        from hydra._internal.config_loader_impl import ConfigLoaderImpl
        from hydra._internal.defaults_list import Overrides

        parsed = OverridesParser.create().parse_overrides(overrides)
        values = Overrides(self._repository, parsed).config_overrides
        groups = tuple(o.input_line for o in parsed if o not in values)
        if groups not in self._composed:
            try:
                self._composed[groups] = compose(config_name=self.config_name, overrides=list(groups))
            except Exception as err:  # noqa: BLE001 - every job with these groups gets the same error
                self._composed[groups] = err
        if isinstance(base := self._composed[groups], Exception):
            raise base
        cfg = copy.deepcopy(base)
        ConfigLoaderImpl._apply_overrides_to_config(values, cfg)
        return cfg


def check_jobs(config: DictConfig) -> tuple[list[str], list[Job]]:
    """Compose every job of the sweep and check it without torch (schema, values that refer to each other, data
    files), then write it in its canonical form and hash its cell (benchmark/inputs.py; torch-free too, except
    that `image_folder` has torchvision count its images); returns one message per bad job and, when there is
    none, every job."""
    errors, checked = [], []
    jobs, swept = job_overrides(config)
    composer = JobComposer(config.hydra.job.config_name)
    for num, overrides in enumerate(jobs):
        try:
            cfg = composer.compose(overrides)
            checked.append(Job(num, overrides, cfg, identify(cfg)))
        except Exception as err:  # noqa: BLE001 - whatever goes wrong, the grid must not start
            errors.append(f"cell {_cell_label(overrides, swept)}: {one_line(err)}")
    return errors, checked if not errors else []


def identify(cfg: DictConfig) -> str:
    """The checks without torch, the canonical form (written into `cfg`) and the cell hash: what cell.prepare
    gives, less the checks that need torch."""
    from benchmark import hashing  # numpy: not imported by a single run's config check

    check_config(cfg)
    hashing.canonicalize(cfg)
    return hashing.cell_hash(cfg)


def check_cells(config: DictConfig, jobs: list[Job]) -> list[str]:
    """The checks that need torch (each cell's model built once, the threat's and the method's own checks) for the
    jobs that will run; one message per bad job."""
    if not jobs:
        return []
    from benchmark.cell import prepare

    errors, swept = [], job_overrides(config)[1]
    for job in jobs:
        try:
            prepare(job.cfg)
        except Exception as err:  # noqa: BLE001
            errors.append(f"cell {_cell_label(job.overrides, swept)}: {one_line(err)}")
    return errors


def jobs_to_skip(jobs: list[Job], finished: dict[str, tuple[str, str]]) -> dict[str, dict]:
    """The jobs whose cell is FINISHED in the store (`finished`: cell hash -> (run id, run name)), by job number,
    unless they ask for `force=true`."""
    return {str(job.num): {"cell_hash": job.cell_hash, "run": finished[job.cell_hash][1],
                           "run_id": finished[job.cell_hash][0]}
            for job in jobs if not job.cfg.force and job.cell_hash in finished}


def same_cell_jobs(jobs: list[Job], skips: dict[str, dict]) -> dict[str, int]:
    """The jobs whose cell an earlier job of the grid computes (e.g. `pruning=none` at every swept sparsity), by
    job number: that job's number. They are launched (each keeps its number) but return at once, instead of
    holding a worker until the first one finishes."""
    first: dict[str, int] = {}
    same: dict[str, int] = {}
    for job in jobs:
        if str(job.num) in skips:
            continue
        if job.cell_hash in first:
            same[str(job.num)] = first[job.cell_hash]
        else:
            first[job.cell_hash] = job.num
    return same


def computed_by(sweep_dir: str | Path, num: int) -> int | None:
    """The number of the earlier job of the grid that computes job `num`'s cell, if there is one."""
    path = Path(sweep_dir) / SAME_CELL_FILE
    return json.loads(path.read_text()).get(str(num)) if path.exists() else None


def skipped_jobs(sweep_dir: str | Path) -> dict[str, dict]:
    """The jobs the grid found FINISHED before it started ({job number: {cell_hash, run, run_id}})."""
    path = Path(sweep_dir) / SKIPS_FILE
    return json.loads(path.read_text()) if path.exists() else {}


def record(sweep_dir: str | Path, num: int, status: str, run: str, cell_hash: str | None = None,
           run_id: str | None = None, error: str | None = None) -> None:
    """Append a job's outcome to the sweep's ledger, which the grid summary reads (URI userinfo masked)."""
    line = json.dumps({"num": num, "status": status, "run": redact(str(run)), "cell_hash": cell_hash,
                       "run_id": run_id, "error": redact(error) if error else error})
    with open(Path(sweep_dir) / CELLS_FILE, "a") as ledger:
        ledger.write(line + "\n")


def progress(num: int) -> str:
    return f"[cell {num + 1}/{os.environ.get(GRID_SIZE_ENV, '?')}]"


def record_skipped_jobs(sweep_dir: str | Path) -> set[int]:
    """Log and record in the ledger each job the grid skips as already finished; returns their numbers
    (hydra_plugins/prunesec_grid_sweeper.py launches the others)."""
    skips = skipped_jobs(sweep_dir)
    for num, done in sorted(skips.items(), key=lambda item: int(item[0])):
        log.info("%s %s: already finished (run %s, cell %s), skipped; force=true recomputes it",
                 progress(int(num)), done["run"], done["run_id"], done["cell_hash"])
        record(sweep_dir, int(num), "skipped", done["run"], done["cell_hash"], done["run_id"])
    return {int(num) for num in skips}


def grid_size(config: DictConfig) -> int:
    """Number of jobs Hydra's basic sweeper will launch (a command-line sweep replaces the preset's for its key)."""
    return len(job_overrides(config)[0])


def _basic_sweeper(config: DictConfig) -> bool:
    """Hydra's basic sweeper or ours built on it (conf/hydra/sweeper/grid.yaml), whose jobs `job_overrides` knows
    (another sweeper picks its jobs as it goes)."""
    return config.hydra.sweeper._target_.endswith(("BasicSweeper", "GridSweeper"))


class GridCallback(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        # Hydra turns a callback's Exception into a warning and runs the grid anyway: SystemExit stops it.
        global started
        try:
            errors, jobs = check_jobs(config) if _basic_sweeper(config) else ([], [])
            _reject(errors)
            from benchmark import tracking  # MLflow: imported once the configs are known to be good

            finished = tracking.finished_cells(tracking_uri_of(config), config.experiment_name) if jobs else {}
            skips = jobs_to_skip(jobs, finished)
            same = same_cell_jobs(jobs, skips)
            _reject(check_cells(config, [job for job in jobs if str(job.num) not in skips | same.keys()]))
            self._create_store(config)
            sweep = Path(config.hydra.sweep.dir)
            sweep.mkdir(parents=True, exist_ok=True)
            (sweep / SKIPS_FILE).write_text(json.dumps(skips))
            (sweep / SAME_CELL_FILE).write_text(json.dumps(same))
            if skips:
                log.info("grid: %d of %d jobs already finished, skipped", len(skips), len(jobs))
        except Exception as err:  # noqa: BLE001 - no grid without its checks, its store and its parent run
            log.error("grid rejected before any cell ran: %s", one_line(err))
            raise SystemExit(EXIT_REJECTED) from None
        started = True

    @staticmethod
    def _create_store(config: DictConfig) -> None:
        """Open the store (tracking_store.StoreUnavailable names why it is unusable), close runs that earlier grids
        left RUNNING, and create this grid's parent run, holding the grid lock until the grid ends."""
        from mlflow.tracking import MlflowClient

        from benchmark import tracking

        results = Path(config.results_dir).resolve()
        uri = tracking_uri_of(config)
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

    @staticmethod
    def _end_parent_run(config: DictConfig, parent_id: str, cells: list[dict], status: str) -> None:
        """Log the grid's figures and tables to its parent run, write the MLflow UI's view of the experiment's
        cells, close the parent run, and release the grid lock."""
        from mlflow.tracking import MlflowClient

        from benchmark.ui_view import write_cells_view

        try:
            log_grid_artifacts(tracking_uri_of(config), config.experiment_name, parent_id, cells)
        except Exception as err:  # noqa: BLE001 - figures are a view of the results; they never fail the grid
            log.warning("grid figures not logged to the parent run: %s: %s", type(err).__name__, err)
        client = MlflowClient()
        try:
            write_cells_view(client, client.get_run(parent_id).info.experiment_id)
        except Exception as err:  # noqa: BLE001 - a view of the results too
            log.warning("the MLflow UI's view of the cells not written: %s: %s", type(err).__name__, err)
        client.set_terminated(parent_id, status)
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
        log.info("grid done: %d finished, %d skipped (finished before, or by an earlier job), %d failed%s",
                 counts["finished"], counts["skipped"], counts["failed"],
                 f", {len(silent)} never reported" if silent else "")
        for cell in failed:
            log.error("  failed: %s: %s", cell["run"], cell["error"])
        for num in silent:
            log.error("  never reported: cell %d (%s)", num + 1, _cell_label(jobs[num], swept))
        if failed or silent:
            sys.exit(EXIT_FAILED)


def _reject(errors: list[str]) -> None:
    if errors:
        log.error("grid rejected before any cell ran: %d bad cell(s)\n  %s", len(errors), "\n  ".join(errors))
        raise SystemExit(EXIT_REJECTED)
