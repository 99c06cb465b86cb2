"""`make benchmark LAUNCHER=...`: the launcher reaches Hydra's command line of every grid `make benchmark` runs (a
launcher set inside a swept experiment file is ignored by Hydra), read from `make -n` (prints, runs nothing)."""
from __future__ import annotations

import subprocess

import pytest

from conftest import ROOT


def planned(*variables: str) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "-n", "-o", ".venv/.installed", "benchmark", *variables], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def grid_lines(done: subprocess.CompletedProcess) -> list[str]:
    assert done.returncode == 0, done.stderr
    return [line for line in done.stdout.splitlines() if "-m benchmark.run -m" in line]


@pytest.mark.parametrize(("launcher", "option", "python"), [
    ("joblib", "parallel", ".venv/bin/python"),
    ("slurm", "slurm", ".venv/bin/python"),
    ("ray", "ray_cluster", ".venv-ray/bin/python"),  # the Ray launcher lives in its own venv (docs/scaling.md)
])
def test_launcher_reaches_every_grid_on_the_command_line(launcher, option, python):
    lines = grid_lines(planned(f"LAUNCHER={launcher}", "EXPERIMENT=default"))
    assert len(lines) == 2  # the default grid and its poisoning slice
    assert all(line.startswith(f"{python} -m benchmark.run -m ") for line in lines), lines
    assert all(line.split().count(f"hydra/launcher={option}") == 1 for line in lines), lines
    for config in ("default", "default_poisoning"):
        assert sum(line.endswith(f" experiment={config}") for line in lines) == 1, lines


def test_basic_runs_cells_one_after_another_and_args_reach_every_grid():
    lines = grid_lines(planned("LAUNCHER=basic", "EXPERIMENT=apb",
                               "BENCHMARK_ARGS=hydra.launcher.n_jobs=4 results_dir=/shared/r"))
    assert len(lines) == 2  # apb and its structured half
    assert not any("hydra/launcher=" in line for line in lines), lines
    assert all("hydra.launcher.n_jobs=4 results_dir=/shared/r" in line for line in lines), lines


def test_the_default_uses_every_core_with_one_thread_per_cell():
    """Several single-threaded workers measured fastest on a multi-core machine; one core runs cells in turn."""
    cores = int(subprocess.run(["nproc"], capture_output=True, text=True).stdout)
    lines = grid_lines(planned("EXPERIMENT=default"))
    if cores == 1:
        assert not any("hydra/launcher=" in line for line in lines), lines
    else:
        for line in lines:
            words = line.split()
            assert {"hydra/launcher=parallel", f"hydra.launcher.n_jobs={cores}", "torch_threads=1"} <= set(words)
    lines = grid_lines(planned("EXPERIMENT=default", "JOBS=3"))
    assert cores == 1 or all("hydra.launcher.n_jobs=3" in line.split() for line in lines), lines


def test_unknown_launcher_is_one_line_naming_the_allowed_ones():
    done = planned("LAUNCHER=dask")
    assert done.returncode == 2 and "benchmark.run" not in done.stdout
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "LAUNCHER=dask" in lines[0] and "allowed: joblib, slurm, ray, basic" in lines[0], lines
