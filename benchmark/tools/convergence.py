"""The `paper` budget's PGD convergence on the seed CNN (docs/threats.md, "Attack strength"): acc(B), acc(2B) and
acc(4B) at each eps, and the gap acc(B) - acc(4B), on the dense model and the sparsest non-collapsed points of
`l1_filter` and `magnitude_global` (both 0.99).

Each case is one cell of the `paper` preset run as a grid runs it (`benchmark.cell.run_cell`: the preset's
training, its PGD-20 x 4 starts at a step of 0.25 eps on all 1,000 test images, its convergence check at 2B and 4B
random starts), with PGD alone (no FGSM, no AutoAttack: the check re-runs PGD only) and `eval=fast`, on the CPU,
seed 0, each in a scratch results directory of its own (nothing cached or finished elsewhere is reused), one case
per process (`--jobs`, default 3: the cases side by side, one torch thread each).

`python -m benchmark.tools.convergence` writes results/convergence.json (the `convergence` block of
docs/threats.md, `make docs`).
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import platform
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from benchmark.version import RESULTS_VERSION

ROOT = Path(__file__).resolve().parents[2]
CASES = (("none", 0.0), ("l1_filter", 0.99), ("magnitude_global", 0.99))  # (pruning method, sparsity)
EPS = (0.1, 0.2)
MULTIPLIERS = (2, 4)  # the paper preset's threat.convergence.multipliers
PGD = "{name:pgd_linf,max_iter:20,step_fraction:0.25,random_restarts:4,batch_size:250}"  # the preset's PGD
OVERRIDES = ("experiment=paper", "model=seed_cnn", "seed=0", "device=cpu", "eval=fast", "torch_threads=1",
             f"dataset.eps=[{','.join(map(str, EPS))}]", f"threat.attacks=[{PGD}]")


def case_overrides(method: str, sparsity: float) -> list[str]:
    return [*OVERRIDES, f"pruning={method}", f"pruning.sparsity={sparsity}"]


def compose(results_dir: Path, method: str, sparsity: float):
    from benchmark.validate import compose_config

    return compose_config([f"results_dir={results_dir}", *case_overrides(method, sparsity)])


def row(method: str, sparsity: float, metrics: dict[str, float]) -> dict:
    """One case's accuracies per eps (acc at B and at each multiple of B) and its gap acc(B) - acc(4B)."""
    per_eps = {}
    for eps in EPS:
        key = f"eps_{eps:g}"
        accs = {"1": metrics[f"robust/pgd_linf/{key}"],
                **{str(m): metrics[f"robust/pgd_linf_x{m}/{key}"] for m in MULTIPLIERS}}
        per_eps[f"{eps:g}"] = {"acc": accs, "gap": metrics[f"robust/convergence_gap/{key}"]}
    return {"method": method, "sparsity": sparsity, "clean_acc": metrics["clean/acc"],
            "achieved_sparsity": metrics["sparsity/achieved"], "eps": per_eps, "cell_s": metrics["time/cell_s"]}


def measure(case: tuple[str, float]) -> dict:
    """One case's row, computed from scratch as a grid computes its cell."""
    from benchmark.cell import run_cell

    method, sparsity = case
    with tempfile.TemporaryDirectory(prefix="convergence-") as scratch:
        result = run_cell(compose(Path(scratch), method, sparsity))
    measured = row(method, sparsity, result.metrics)
    print(f"{method} {sparsity:g}: gap " + ", ".join(f"eps {e}: {v['gap'] * 100:.1f} points"
                                                for e, v in measured["eps"].items())
          + f" ({measured['cell_s']:.0f} s)", flush=True)
    return measured


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "results" / "convergence.json"))
    parser.add_argument("--jobs", type=int, default=len(CASES), help="cases measured side by side")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    with ProcessPoolExecutor(max_workers=args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        rows = list(pool.map(measure, CASES))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"results_version": RESULTS_VERSION, "multipliers": list(MULTIPLIERS),
                               "overrides": list(OVERRIDES), "rows": rows,
                               "machine": f"{platform.machine()} {platform.processor() or platform.system()}",
                               "jobs": args.jobs, "total_s": time.perf_counter() - started}, indent=1) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
