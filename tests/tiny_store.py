"""A tiny real grid, run once per test session through the CLI, whose MLflow store the tracking/figures tests share.

2 methods (magnitude_global, l1_filter) x 2 sparsities x 2 seeds on digits = 8 cells, each a real cell (dense
training, pruning, fine-tuning, FGSM + PGD); the costly optional evaluations (corruptions, attributions) are off.
"""
from __future__ import annotations

import atexit
import functools
import json
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from conftest import ROOT, cli_env

EXPERIMENT = "tiny"
GRID = ["debug=tiny", "eval=fast", "train.epochs=3", "threat=evasion", "threat.subset=50",
        "pruning=magnitude_global,l1_filter", "pruning.sparsity=0.5,0.9", "seed=0,1"]
N_JOBS = N_CELLS = 8


@dataclass(frozen=True)
class Store:
    results: Path
    uri: str
    experiment: str
    first_run_s: float
    ledger: list[dict]


def run_cli(*overrides: str, multirun: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "benchmark.run", *(["-m"] if multirun else []), *overrides]
    done = subprocess.run(cmd, cwd=ROOT, env=cli_env(), capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def run_grid(results: Path, sweep: str, *extra: str) -> tuple[float, list[dict]]:
    """Runs the tiny grid; returns its wall time and its ledger (one line per job: status, cell hash)."""
    started = time.perf_counter()
    run_cli(*GRID, f"results_dir={results}", f"experiment_name={EXPERIMENT}", f"hydra.sweep.dir={results / sweep}",
            *extra)
    ledger = [json.loads(line) for line in (results / sweep / "cells.jsonl").read_text().splitlines()]
    return time.perf_counter() - started, ledger


@functools.cache
def build() -> Store:
    results = Path(tempfile.mkdtemp(prefix="prunesec-tiny-"))
    atexit.register(shutil.rmtree, results, ignore_errors=True)
    seconds, ledger = run_grid(results, "sweep-first")
    return Store(results, f"sqlite:///{results / 'mlflow.db'}", EXPERIMENT, seconds, ledger)
