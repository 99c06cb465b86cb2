"""Hydra entry point: `python -m benchmark.run [overrides]` runs one cell; `-m` runs a grid.

In a grid a failed cell is recorded (MLflow status FAILED, listed in the grid summary) and the grid goes on;
a single run exits non-zero. A bad config fails before any compute with the key, value and allowed values.
"""
from __future__ import annotations

import json
import logging
import os
import sys
import traceback

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from benchmark.cell import CellResult, run_cell
from benchmark.data import DatasetUnavailable
from benchmark.grid import CELLS_FILE, GRID_SIZE_ENV
from benchmark.validate import ConfigError

log = logging.getLogger("benchmark")


def _progress(hydra_cfg) -> str:
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return ""
    total = os.environ.get(GRID_SIZE_ENV, "?")
    return f"[cell {hydra_cfg.job.num + 1}/{total}]"


def _record(hydra_cfg, result: CellResult) -> None:
    """Append the cell's outcome to the sweep's ledger, which the grid summary reads."""
    if hydra_cfg.mode == RunMode.MULTIRUN:
        line = json.dumps({"num": hydra_cfg.job.num, "status": result.status, "run": result.run_name,
                           "cell_hash": result.cell_hash, "run_id": result.run_id, "error": result.error})
        with open(os.path.join(hydra_cfg.sweep.dir, CELLS_FILE), "a") as ledger:
            ledger.write(line + "\n")


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> str:
    hydra_cfg = HydraConfig.get()
    try:
        result = run_cell(cfg, _progress(hydra_cfg))
    except ConfigError as err:
        log.error("config error: %s", err)
        if hydra_cfg.mode != RunMode.MULTIRUN:
            sys.exit(2)
        result = CellResult("failed", "", str(hydra_cfg.job.override_dirname), error=f"config error: {err}")
    except (DatasetUnavailable, OSError) as err:  # missing data, full or unwritable disk: the message says it all
        log.error("cell failed: %s: %s", type(err).__name__, err)
        if hydra_cfg.mode != RunMode.MULTIRUN:
            sys.exit(1)
        result = CellResult("failed", "", str(hydra_cfg.job.override_dirname), error=f"{type(err).__name__}: {err}")
    except Exception as err:  # noqa: BLE001 - a grid must survive one broken cell
        log.error("cell failed: %s\n%s", err, traceback.format_exc())
        if hydra_cfg.mode != RunMode.MULTIRUN:
            sys.exit(1)
        result = CellResult("failed", "", str(hydra_cfg.job.override_dirname), error=f"{type(err).__name__}: {err}")
    _record(hydra_cfg, result)
    return result.status


if __name__ == "__main__":
    main()
