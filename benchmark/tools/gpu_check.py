"""`make gpu-check`: run a grid with `device=cuda` and with `device=cpu` into two stores of their own, and check
that the GPU computes the same benchmark: per cell, clean and robust accuracy within the binomial 95% (Wilson)
interval of the CPU's value, achieved sparsity identical. Prints the per-cell table and the mean time per stage on
each device (and their ratio), and the wall time of each grid including process start-up.

    python -m benchmark.tools.gpu_check [--experiment default] [--out results/gpu_check] [--cpu-results DIR]

Refuses (exit 2) where torch sees no CUDA device. Exit 1 when a cell differs beyond the interval.
Cells are matched by their params (the resolved config, which excludes the device). The `threshold` method's
sparsity follows its rate from the trained weights, which differ between devices: it is reported, not required.
"""
from __future__ import annotations

import argparse
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


def run_grid(experiment: str, device: str, results: Path, extra: list[str]) -> float:
    """Run the grid as `make benchmark` does, into `results`; returns its wall time (start-up included)."""
    command = [sys.executable, "-m", "benchmark.run", "-m", f"experiment={experiment}", f"device={device}",
               f"results_dir={results}", f"experiment_name={experiment}", *extra]
    print("$", " ".join(command), flush=True)
    started = time.perf_counter()
    subprocess.run(command, check=True)
    return time.perf_counter() - started


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
    from hydra import compose, initialize_config_dir

    from benchmark.inputs import split_sizes

    with initialize_config_dir(config_dir=str(Path(__file__).resolve().parents[2] / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"experiment={experiment}"])
    return split_sizes(cfg.dataset)[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--experiment", default="default")
    parser.add_argument("--out", type=Path, default=Path("results/gpu_check"))
    parser.add_argument("--cpu-results", type=Path, default=None,
                        help="a results dir that already holds the CPU grid (default: <out>/cpu, run here)")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for both grids")
    args = parser.parse_args(argv)
    refuse_without_cuda()
    out = args.out.resolve()
    cpu_dir = (args.cpu_results or out / "cpu").resolve()
    wall = {"cuda": run_grid(args.experiment, "cuda", out / "cuda", args.overrides),
            "cpu": run_grid(args.experiment, "cpu", cpu_dir, args.overrides)}
    cpu, gpu = load_cells(cpu_dir, args.experiment), load_cells(out / "cuda", args.experiment)
    table, agree = compare(cpu, gpu, _test_split_size(args.experiment))
    with pd.option_context("display.width", 200, "display.max_rows", None, "display.max_columns", None):
        print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        print()
        print(stage_times(cpu, gpu).to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    print(f"\ncells compared: {len(table)} (CPU store {len(cpu)}, GPU store {len(gpu)}); "
          f"grid wall time with start-up: GPU {wall['cuda']:.0f} s, CPU {wall['cpu']:.0f} s "
          "(a re-run skips finished cells: use a fresh --out to time a grid)")
    print("GPU and CPU agree" if agree and len(table) else "GPU and CPU DISAGREE (see the rows marked OUTSIDE)")
    return 0 if agree and len(table) else 1


if __name__ == "__main__":
    sys.exit(main())
