"""Hydra entry point: `python -m benchmark.run [overrides]` runs one cell; `-m` runs a grid.

Exit codes, for a single run and a grid alike:
  0  every cell finished, or was skipped as already finished;
  1  some cell failed (a grid goes on with the others, records each as a FAILED run and names it in its summary);
  2  the config was rejected before any compute (one line naming the key, the value and what is allowed; a grid
     checks every cell first, so nothing has run and the tracking store is untouched), or the tracking store is
     unusable (one line naming the store and the cause).
The config is composed and checked before torch, ART and MLflow are imported, so a mistake is reported fast.
The checks are imported inside `cli`: importing them imports the installed plugins (benchmark/plugins.py), and a
broken plugin is a rejected config too.
"""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from benchmark.checks import ConfigError
from benchmark.exit_codes import EXIT_FAILED, EXIT_REJECTED, one_line
from benchmark.tracking_store import StoreUnavailable, probe_store, redact, redact_file, tracking_uri_of

log = logging.getLogger("benchmark")
_job_started = False  # set once Hydra hands a composed config to `main`


def _progress(hydra_cfg) -> str:
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return ""
    from benchmark import grid

    return grid.progress(hydra_cfg.job.num)


def _record(hydra_cfg, status: str, run: str, cell_hash: str | None = None, run_id: str | None = None,
            error: str | None = None) -> None:
    if hydra_cfg.mode == RunMode.MULTIRUN:
        from benchmark import grid

        grid.record(hydra_cfg.sweep.dir, hydra_cfg.job.num, status, run, cell_hash, run_id, error)


def _computed_by_an_earlier_job(hydra_cfg) -> bool:
    """A grid job whose cell an earlier job of the grid computes is recorded as skipped, and frees its worker."""
    from benchmark import grid

    first = grid.computed_by(hydra_cfg.sweep.dir, hydra_cfg.job.num)
    if first is None:
        return False
    log.info("%s the same cell as %s, which computes it; skipped", grid.progress(hydra_cfg.job.num),
             grid.progress(first))
    _record(hydra_cfg, "skipped", hydra_cfg.job.override_dirname)
    return True


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> str:
    global _job_started
    _job_started = True
    hydra_cfg = HydraConfig.get()
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    if hydra_cfg.output_subdir is not None:  # the configs Hydra saved for this job: no credentials in them
        for name in ("config.yaml", "hydra.yaml", "overrides.yaml"):
            redact_file(Path(hydra_cfg.runtime.output_dir) / hydra_cfg.output_subdir / name)
    from benchmark.validate import check_config, check_device

    if multirun and _computed_by_an_earlier_job(hydra_cfg):
        return "skipped"
    try:
        if not multirun:  # a grid checked every cell and its store before the first one started
            check_config(cfg)
            probe_store(tracking_uri_of(cfg))
        check_device(cfg.device)  # here: the machine that computes
        from benchmark.cell import run_cell  # torch, ART, MLflow: only for a valid config

        result = run_cell(cfg, _progress(hydra_cfg))
    except ConfigError as err:  # incl. the checks that need torch (e.g. a model that does not fit the dataset)
        log.error("config rejected: %s", err)
        if not multirun:
            sys.exit(EXIT_REJECTED)
        _record(hydra_cfg, "failed", hydra_cfg.job.override_dirname, error=f"config error: {err}")
        return "failed"
    except Exception as err:  # noqa: BLE001 - a grid must survive one broken cell
        if isinstance(err, StoreUnavailable) and not multirun:  # rejected before any compute, like a bad config
            log.error("store rejected: %s", err)
            sys.exit(EXIT_REJECTED)
        from benchmark.data import DatasetUnavailable  # torch: after the store's rejection, which needs none

        if isinstance(err, (DatasetUnavailable, OSError)):  # a failed download, a full or unwritable disk
            log.error("cell failed: %s: %s", type(err).__name__, err)  # the message says it all
        else:
            log.exception("cell failed: %s", err)
        if not multirun:
            sys.exit(EXIT_FAILED)
        _record(hydra_cfg, "failed", hydra_cfg.job.override_dirname, error=f"{type(err).__name__}: {err}")
        return "failed"
    _record(hydra_cfg, result.status, result.run_name, result.cell_hash, result.run_id, result.error)
    return result.status


def cli() -> None:
    """`main` with the exit codes above. Hydra reports an error it meets itself (a config it cannot compose, an
    output folder it cannot create) over several lines with exit code 1; before any job or cell has started
    such an error is a rejected config: one line, exit code 2."""
    user_wants_traceback = os.environ.get("HYDRA_FULL_ERROR") == "1"
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra re-raises its errors instead of printing them and exiting 1
    try:
        from benchmark.validate import check_group_overrides  # the schema: every plugin is imported here

        check_group_overrides(sys.argv[1:])
        main()
    except Exception as err:  # noqa: BLE001 - every error reaches the user as one line and an exit code
        if user_wants_traceback:
            raise
        grid = sys.modules.get("benchmark.grid")  # a grid's callback imports it; a single run has no grid
        started = _job_started or bool(grid and grid.started)
        print(redact(f"{'error' if started else 'config rejected'}: {one_line(err)}"), file=sys.stderr)
        sys.exit(EXIT_FAILED if started else EXIT_REJECTED)


if __name__ == "__main__":
    cli()
