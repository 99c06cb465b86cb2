"""`make gpu-check`: run a grid with `device=cuda` and with `device=cpu` into two stores of their own, and check
that the GPU computes the same benchmark: per cell, clean and robust accuracy within the binomial 95% (Wilson)
interval of the CPU's value, achieved sparsity identical. Then one ResNet-18 cell (torchvision, CIFAR stem) on
synthetic CIFAR-format data (32 x 32 RGB, 10 classes, an npz written here) on each device. Prints the per-cell table
and the mean time per stage on each device (and their ratio), and writes every timing (each run's wall time with
start-up, each stage's mean per cell) and the verdict into one JSON (`<out>/gpu_check.json`), rewritten after each
step so that a run cut short keeps what it measured.

    python -m benchmark.tools.gpu_check [--experiment default] [--out results/gpu_check] [--cpu-results DIR]
                                         [--timeout 500] [--cuda-jobs 4]

The whole check ends within `--timeout` seconds (default 500: under 9 minutes with start-up): each step gets what is
left, a step still running at the deadline is stopped and recorded as timed out, and the steps after it are
recorded as not run (exit 1). Refuses (exit 2) where torch sees no CUDA device. Exit 1 when a cell differs beyond
the interval. Cells are matched by their params (the resolved config, which excludes the device). The `threshold`
method's sparsity follows its rate from the trained weights, which differ between devices: it is reported, not
required.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

RATE_BASED = {"threshold"}  # sparsity set by a rule on the weights, not by the target count
TOLERANCE_OK, TOLERANCE_OFF = "ok", "OUTSIDE"


def refuse_without_cuda() -> None:
    import torch

    if not torch.cuda.is_available():
        print(f"gpu-check needs a CUDA GPU: torch {torch.__version__} sees none (torch.cuda.is_available() is False; "
              f"torch built for CUDA {torch.version.cuda or 'none'}). Run it on a machine with an NVIDIA GPU and "
              "a CUDA build of torch.", file=sys.stderr)
        sys.exit(2)


class Deadline:
    """The check's time limit: each step runs with what is left of it."""

    def __init__(self, seconds: float):
        self.ends = time.monotonic() + seconds

    def left(self) -> float:
        return self.ends - time.monotonic()


def run_step(command: list[str], deadline: Deadline, margin_s: float = 10.0) -> tuple[float, str]:
    """(wall seconds, "ok" | "failed (exit N)" | "timed out" | "not run: no time left"): `command` run with the time
    left before `deadline` less `margin_s` (kept for the summary); at the limit its whole process group (a grid's
    workers too) is stopped."""
    budget = deadline.left() - margin_s
    if budget <= 0:
        return 0.0, "not run: no time left"
    print("$", " ".join(command), flush=True)
    started = time.perf_counter()
    process = subprocess.Popen(command, start_new_session=True)
    try:
        code = process.wait(timeout=budget)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        return time.perf_counter() - started, "timed out"
    return time.perf_counter() - started, "ok" if code == 0 else f"failed (exit {code})"


def grid_command(experiment: str, device: str, results: Path, extra: list[str], jobs: int) -> list[str]:
    """The grid as `make benchmark` runs it (joblib workers, one torch thread each), into `results`."""
    launcher = ["hydra/launcher=parallel", f"hydra.launcher.n_jobs={jobs}", "torch_threads=1"] if jobs > 1 else []
    return [sys.executable, "-m", "benchmark.run", "-m", f"experiment={experiment}", f"device={device}",
            f"results_dir={results}", f"experiment_name={experiment}", *launcher, *extra]


RESNET_EXPERIMENT = "gpu_check_resnet18"
RESNET_DATA = {"n_train": 2000, "n_test": 500}  # per split, 10 classes, 32 x 32 RGB


def write_cifar_format(path: Path, n_train: int, n_test: int, seed: int = 0) -> Path:
    """Synthetic CIFAR-format data: uint8 N x 32 x 32 x 3 images, labels 0-9, each class a bright row of its own
    over noise, so that a few epochs learn it."""
    import numpy as np

    rng = np.random.default_rng(seed)

    def split(n: int):
        y = np.arange(n) % 10
        x = rng.integers(0, 120, (n, 32, 32, 3), dtype=np.uint8)
        for c in range(10):
            x[y == c, 3 * c, :, :] = 255
        return x, y

    (x_train, y_train), (x_test, y_test) = split(n_train), split(n_test)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return path


def resnet_command(device: str, results: Path, data: Path) -> list[str]:
    """One ResNet-18 cell (CIFAR stem) on the CIFAR-format npz: 2 epochs, l1_filter at 0.5, FGSM, PGD-10,
    APGD-DLR-20 and APGD-T at the npz preset's three CIFAR eps on 200 images; `eval=fast` with a 32-image latency
    batch, since latency is timed on one CPU thread whatever the device."""
    return [sys.executable, "-m", "benchmark.run", "-m", "dataset=npz", f"dataset.path={data}", "model=torchvision",
            "model.arch=resnet18", "model.cifar_stem=true", "pruning=l1_filter", "pruning.sparsity=0.5",
            "train.epochs=2", "threat=evasion", "threat.subset=200", "eval=fast", "eval.latency.batch_size=32",
            f"device={device}", f"results_dir={results}", f"experiment_name={RESNET_EXPERIMENT}"]


def load_cells(results: Path, experiment: str) -> pd.DataFrame:
    from benchmark.figures import load_runs
    from benchmark.tracking_store import default_tracking_uri

    runs = load_runs(default_tracking_uri(results), experiment)
    if runs.empty:
        return runs
    runs = runs.sort_values("start_time").drop_duplicates("tags.cell_hash", keep="last")
    params = sorted(c for c in runs.columns if c.startswith("params."))
    runs["cell"] = runs[params].apply(lambda row: "|".join(f"{k}={v}" for k, v in row.items() if pd.notna(v)), axis=1)
    return runs.set_index("cell")


def accuracy_columns(runs: pd.DataFrame) -> list[str]:
    return ["metrics.clean/acc"] + sorted(c for c in runs.columns
                                          if c.startswith("metrics.robust/") and "/eps_" in c and "curve" not in c)


def _sample_size(row: pd.Series, column: str, n_test: int) -> int:
    """Images behind an accuracy: the test split for clean/acc, the attack's (or the cell's) evaluation subset."""
    if column == "metrics.clean/acc":
        return n_test
    attack = column.split("/")[1]
    for key in (f"metrics.attack/{attack}/subset_size", "metrics.robust/subset_size"):
        if key in row and pd.notna(row[key]):
            return int(row[key])
    return n_test


def within_interval(cpu: float, gpu: float, n: int, alpha: float = 0.05) -> bool:
    """Is the GPU's accuracy inside the Wilson 95% interval of the CPU's (a binomial proportion over n images)?"""
    from statsmodels.stats.proportion import proportion_confint

    low, high = proportion_confint(round(cpu * n), n, alpha=alpha, method="wilson")
    return low - 1e-12 <= gpu <= high + 1e-12


def compare(cpu: pd.DataFrame, gpu: pd.DataFrame, n_test: int) -> tuple[pd.DataFrame, bool]:
    """One row per cell present in both stores: the accuracies, whether each is inside the interval, and whether
    the achieved sparsity is identical. Returns (table, all cells agree)."""
    rows, agree = [], True
    for cell in sorted(set(cpu.index) & set(gpu.index)):
        c, g = cpu.loc[cell], gpu.loc[cell]
        method = c.get("params.pruning.method", "")
        row = {"run": c.get("tags.mlflow.runName", cell)}
        outside = [col.split("metrics.")[1] for col in accuracy_columns(cpu)
                   if col in gpu and pd.notna(c[col]) and pd.notna(g[col])
                   and not within_interval(float(c[col]), float(g[col]), _sample_size(c, col, n_test))]
        same_sparsity = float(c["metrics.sparsity/achieved"]) == float(g["metrics.sparsity/achieved"])
        row.update({"clean_cpu": c["metrics.clean/acc"], "clean_gpu": g["metrics.clean/acc"],
                    "worst_cpu": _worst(c), "worst_gpu": _worst(g),
                    "sparsity_cpu": c["metrics.sparsity/achieved"], "sparsity_gpu": g["metrics.sparsity/achieved"],
                    "accuracies": TOLERANCE_OK if not outside else f"{TOLERANCE_OFF}: {', '.join(outside)}",
                    "sparsity": "identical" if same_sparsity else
                    ("differs (rate-based)" if method in RATE_BASED else TOLERANCE_OFF)})
        agree &= not outside and (same_sparsity or method in RATE_BASED)
        rows.append(row)
    return pd.DataFrame(rows), agree


def _worst(row: pd.Series) -> float:
    worst = [v for k, v in row.items() if k.startswith("metrics.robust/worst/eps_") and pd.notna(v)]
    return min(worst) if worst else float("nan")


def stage_times(cpu: pd.DataFrame, gpu: pd.DataFrame) -> pd.DataFrame:
    """Mean seconds per cell of each `time/*` stage on each device, and CPU / GPU (the speed-up)."""
    columns = sorted(c for c in cpu.columns if c.startswith("metrics.time/") and c in gpu.columns)
    table = pd.DataFrame({"stage": [c.split("metrics.")[1] for c in columns],
                          "cpu_s": [cpu[c].mean() for c in columns], "gpu_s": [gpu[c].mean() for c in columns]})
    table["cpu/gpu"] = table["cpu_s"] / table["gpu_s"]
    return table


def _test_split_size(experiment: str) -> int:
    from benchmark.inputs import split_sizes
    from benchmark.validate import compose_config

    return split_sizes(compose_config([f"experiment={experiment}"]).dataset)[1]


def _stage_means(results: Path, experiment: str) -> dict[str, float]:
    """Mean seconds per cell of each `time/*` stage in a store (empty when it holds no cell)."""
    runs = load_cells(results, experiment) if (results / "mlflow.db").is_file() else pd.DataFrame()
    return {c.split("metrics.")[1]: float(runs[c].mean()) for c in sorted(runs.columns)
            if c.startswith("metrics.time/")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--experiment", default="default")
    parser.add_argument("--out", type=Path, default=Path("results/gpu_check"))
    parser.add_argument("--cpu-results", type=Path, default=None,
                        help="a results dir that already holds the CPU grid (default: <out>/cpu, run here)")
    parser.add_argument("--timeout", type=float, default=500.0, help="seconds for the whole check (default 500)")
    parser.add_argument("--cuda-jobs", type=int, default=4, help="joblib workers sharing the GPU (1: one process)")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for both grids")
    args = parser.parse_args(argv)
    if args.timeout <= 0 or args.cuda_jobs < 1:
        bad = f"--timeout={args.timeout:g}: must be > 0" if args.timeout <= 0 else \
            f"--cuda-jobs={args.cuda_jobs}: must be at least 1"
        print(f"gpu-check: {bad}", file=sys.stderr)
        sys.exit(2)
    refuse_without_cuda()
    import torch

    deadline, started = Deadline(args.timeout), time.perf_counter()
    out = args.out.resolve()
    cpu_dir = (args.cpu_results or out / "cpu").resolve()
    cores = os.cpu_count() or 1
    report = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "cuda": torch.version.cuda,
              "machine": f"{platform.machine()}, {cores} cores", "experiment": args.experiment,
              "timeout_s": args.timeout, "steps": {}}
    json_path = out / "gpu_check.json"

    def step(name: str, command: list[str], results: Path, experiment: str) -> None:
        wall, status = run_step(command, deadline)
        report["steps"][name] = {"status": status, "wall_s": wall, "stage_means_s": _stage_means(results, experiment)}
        report["wall_s"] = time.perf_counter() - started
        out.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(report, indent=1))

    step("grid_cuda", grid_command(args.experiment, "cuda", out / "cuda", args.overrides, args.cuda_jobs),
         out / "cuda", args.experiment)
    data = write_cifar_format(out / "cifar_format.npz", **RESNET_DATA)
    step("resnet18_cuda", resnet_command("cuda", out / "resnet18_cuda", data), out / "resnet18_cuda",
         RESNET_EXPERIMENT)
    if args.cpu_results is None:
        step("grid_cpu", grid_command(args.experiment, "cpu", cpu_dir, args.overrides, cores), cpu_dir,
             args.experiment)
    step("resnet18_cpu", resnet_command("cpu", out / "resnet18_cpu", data), out / "resnet18_cpu", RESNET_EXPERIMENT)

    cpu, gpu = load_cells(cpu_dir, args.experiment), load_cells(out / "cuda", args.experiment)
    table, agree = (compare(cpu, gpu, _test_split_size(args.experiment)) if len(cpu) and len(gpu)
                    else (pd.DataFrame(), False))
    with pd.option_context("display.width", 200, "display.max_rows", None, "display.max_columns", None):
        print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        print()
        if len(cpu) and len(gpu):
            print(stage_times(cpu, gpu).to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    complete = all(s["status"] == "ok" for s in report["steps"].values())
    walls = ", ".join(f"{name} {s['wall_s']:.0f} s ({s['status']})" for name, s in report["steps"].items())
    print(f"\ncells compared: {len(table)} (CPU store {len(cpu)}, GPU store {len(gpu)}); wall time with start-up: "
          f"{walls} (a re-run skips finished cells: use a fresh --out to time a grid)")
    ok = agree and len(table) > 0 and complete
    print("GPU and CPU agree" if agree and len(table) else "GPU and CPU DISAGREE (see the rows marked OUTSIDE)"
          if len(table) else "no cell to compare")
    report.update({"cells_compared": len(table), "agree": bool(agree and len(table)), "complete": complete,
                   "ok": ok, "wall_s": time.perf_counter() - started,
                   "outside": [] if table.empty else table[table["accuracies"] != TOLERANCE_OK]["run"].tolist()})
    json_path.write_text(json.dumps(report, indent=1))
    print(f"timings and verdict: {json_path}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
