"""Exit codes of `python -m benchmark.run` (benchmark/run.py): 0 every cell finished or skipped, 1 some cell failed,
2 the config was rejected before any compute. Exit code 0 of a fresh and a re-run grid and of a single run is
asserted by every test that runs one through tests/tiny_store.run_cli."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, cli_env

HEAVY = {"torch", "art", "mlflow", "captum", "torch_pruning", "torchvision", "sklearn"}
# two cheap cells: no training happens before they fail (see _unwritable_cache)
GRID = ["-m", "model=lenet300", "threat=fgsm", "pruning.sparsity=0.5,0.7", "train.epochs=1", "finetune.epochs=0",
        "threat.subset=20", "eval=fast"]


def _cli(results: Path, *args: str, importtime: bool = False) -> subprocess.CompletedProcess:
    python = [sys.executable, *(["-X", "importtime"] if importtime else [])]
    return subprocess.run([*python, "-m", "benchmark.run", *args, "debug=tiny",
                           f"results_dir={results}"], cwd=ROOT, env=cli_env(), capture_output=True, text=True, timeout=300)


def _store_untouched(results: Path) -> bool:
    return not any((results / name).exists() for name in ("mlflow.db", "cache", "mlartifacts", "locks"))


def _unwritable_cache(results: Path) -> Path:
    """A real failure that is no config mistake: the model cache's folder is a file."""
    results.mkdir(parents=True)
    (results / "cache").write_text("not a folder")
    return results


def test_single_run_config_mistake_exits_2_in_one_line_before_the_heavy_imports(tmp_path):
    out = _cli(tmp_path, "train.epochs=1.5", importtime=True)
    assert out.returncode == 2, out.stderr[-2000:]
    imported = {line.split("|")[-1].strip() for line in out.stderr.splitlines() if line.startswith("import time:")}
    assert not HEAVY & imported, sorted(HEAVY & imported)
    said = [line for line in (out.stdout + out.stderr).splitlines() if line and not line.startswith("import time:")]
    assert len(said) == 1 and said[0].endswith(
        "config rejected: train.epochs=1.5 is not a whole number; allowed: a whole number 1 <= epochs <= 10000"), said
    assert _store_untouched(tmp_path)


@pytest.mark.parametrize("store, reason", [
    ("http://127.0.0.1:9", "store rejected: tracking server http://127.0.0.1:9 is unreachable"),
    ("not_a_db", "is not an SQLite database: restore it from a backup, or move it aside"),
])
def test_single_run_with_an_unusable_store_exits_2_in_one_line_before_the_heavy_imports(tmp_path, store, reason):
    if store == "not_a_db":
        tmp_path.joinpath("mlflow.db").write_text("hello\n")
    out = _cli(tmp_path, *([f"tracking_uri={store}"] if store.startswith("http") else []), importtime=True)
    assert out.returncode == 2, out.stderr[-2000:]
    imported = {line.split("|")[-1].strip() for line in out.stderr.splitlines() if line.startswith("import time:")}
    assert not HEAVY & imported, sorted(HEAVY & imported)
    said = [line for line in (out.stdout + out.stderr).splitlines() if line and not line.startswith("import time:")]
    assert len(said) == 1 and reason in said[0], said


@pytest.mark.parametrize("override, reason", [
    ("pruning.sparsty=0.5", "Could not override 'pruning.sparsty'"),  # Hydra: not a key of the struct
    ("model=resnet50", "Could not find 'model/resnet50'; Available options in 'model': custom, lenet300, preact_resnet18"),
    # a config group's value that is no option name: Hydra's own error names neither the group nor the value
    ("train=[1,2]", "train=[1,2]: 'train' is a config group; its value names one of its options: ['default']"),
    ("train=3", "train=3: 'train' is a config group; its value names one of its options: ['default']"),
])
def test_config_hydra_cannot_compose_exits_2_in_one_line(tmp_path, override, reason):
    out = _cli(tmp_path, override)
    assert out.returncode == 2, out.stderr[-2000:]
    lines = [line for line in (out.stdout + out.stderr).splitlines() if line]
    assert len(lines) == 1 and lines[0].startswith("config rejected: ") and reason in lines[0], lines


def test_grid_with_one_bad_cell_is_rejected_before_any_cell_runs(tmp_path):
    out = _cli(tmp_path, "-m", "pruning=magnitude_global,random", "pruning.sparsity=0.5,1.5", "train.epochs=1")
    text = out.stdout + out.stderr
    assert out.returncode == 2, text[-2000:]
    assert "grid rejected before any cell ran: 2 bad cell(s)" in text
    assert "cell pruning=random pruning.sparsity=1.5: pruning.sparsity=1.5 is out of range" in text
    assert _store_untouched(tmp_path) and "[cell" not in text and "Traceback" not in text


def test_grid_pre_check_failing_for_any_reason_exits_2(tmp_path):
    """Not only config mistakes: here MLflow refuses the tracking URI while the store is created."""
    out = _cli(tmp_path, *GRID, "tracking_uri=bogus://nowhere")
    text = out.stdout + out.stderr
    assert out.returncode == 2, text[-2000:]
    rejected = [line for line in text.splitlines() if "grid rejected before any cell ran" in line]
    assert len(rejected) == 1 and "bogus://nowhere" in rejected[0], text[-2000:]
    assert "[cell" not in text and "Traceback" not in text and "Launching" not in text


@pytest.mark.parametrize("launcher", [
    pytest.param([], id="basic"),
    # the callback runs in the launching process and reads the ledger the workers append to
    pytest.param(["hydra/launcher=parallel", "hydra.launcher.n_jobs=2"], id="joblib", marks=pytest.mark.slow),
])
def test_grid_whose_cells_fail_exits_1_and_names_them(tmp_path, launcher):
    out = _cli(_unwritable_cache(tmp_path / "results"), *GRID, *launcher)
    text = out.stdout + out.stderr
    assert out.returncode == 1, text[-3000:]
    assert "grid done: 0 finished, 0 skipped (finished before, or by an earlier job), 2 failed" in text
    for sparsity in ("0.5", "0.7"):
        assert any("failed:" in line and f"pruning.sparsity={sparsity}" in line and "NotADirectoryError" in line
                   for line in text.splitlines()), text[-3000:]


def test_single_run_that_fails_exits_1(tmp_path):
    out = _cli(_unwritable_cache(tmp_path / "results"), "model=lenet300", "threat=fgsm", "train.epochs=1")
    assert out.returncode == 1, (out.stdout + out.stderr)[-2000:]
    assert "cell failed: NotADirectoryError" in out.stdout + out.stderr
