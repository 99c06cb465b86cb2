"""The clean-label backdoor's ASR by what the attacker knows (docs/threats.md, "Poisoning and backdoors"): the
dense seed CNN's backdoor success when the attacker's proxy is the victim's twin (`white_box`: the victim's
architecture, `threat.proxy.seed_offset` 0) and when it is not (`transfer`: the shipped default, seed offset 1;
and a proxy of another architecture, `lenet300`).

Each case is one cell of the `backdoor` preset's clean-label setting on mnist5k (`experiment=backdoor`,
`threat=clean_label_backdoor`, its training and trigger) with `pruning=none`: the dense model's ASR, target rate on
clean images and clean accuracy (the cell's `<metric>_pruned`, right after the identity pruning), and the same after
the preset's fine-tune on the clean set (the cell's `backdoor/asr`, ...); run as a grid runs it (`benchmark.cell.run_cell`), on the CPU, seed 0 (`--seeds` for more), each in a scratch results
directory of its own (nothing cached elsewhere is reused), one case per process (`--jobs`, one torch thread each).
`--epochs` lowers the victim's and the proxy's epochs below the preset's when a run must be cheaper; the JSON
records the budget it ran at.

`python -m benchmark.tools.clean_label_knowledge` writes results/clean_label_knowledge.json (the
`clean-label-knowledge` block of docs/threats.md, `make docs`).
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VICTIM = "seed_cnn"
CASES = {  # case -> threat.proxy overrides (the rest of the proxy as shipped)
    "white_box": ("threat.proxy.seed_offset=0", f"threat.proxy.model={VICTIM}"),
    "transfer": (),
    "transfer_lenet300": ("threat.proxy.model=lenet300",),
}
MEASURES = {"asr": "backdoor/asr", "target_rate_clean": "backdoor/target_rate_clean", "clean_acc": "clean/acc"}
OVERRIDES = ("experiment=backdoor", "threat=clean_label_backdoor", "threat.stage=poison_then_prune",
             "pruning=none", f"model={VICTIM}", "device=cpu", "eval=fast", "torch_threads=1")


def case_overrides(case: str, seed: int, epochs: int | None = None) -> list[str]:
    budget = [] if epochs is None else [f"train.epochs={epochs}", f"threat.proxy.epochs={epochs}"]
    return [*OVERRIDES, f"seed={seed}", *CASES[case], *budget]


def compose(results_dir: Path, case: str, seed: int, epochs: int | None = None):
    from benchmark.validate import compose_config

    return compose_config([f"results_dir={results_dir}", *case_overrides(case, seed, epochs)])


def knowledge(cfg) -> str:
    """The `threat/knowledge` tag the cell gets (the threat's own `tags`, as `run_cell` computes it)."""
    from attacks import build_threat

    return build_threat(cfg.threat).tags(cfg.model.name)["threat/knowledge"]


def measure(job: tuple[str, int, int | None]) -> dict:
    """One case's row, computed from scratch as a grid computes its cell."""
    from benchmark.cell import run_cell

    case, seed, epochs = job
    with tempfile.TemporaryDirectory(prefix="clean-label-knowledge-") as scratch:
        cfg = compose(Path(scratch), case, seed, epochs)
        result = run_cell(cfg)
    if result.status != "finished":
        raise RuntimeError(f"{case} seed {seed}: the cell {result.status}: {result.error}")
    metrics = result.metrics
    proxy = cfg.threat.proxy
    row = {"case": case, "seed": seed, "knowledge": knowledge(cfg), "victim": cfg.model.name,
           "proxy": {"model": proxy.model, "seed_offset": int(proxy.seed_offset), "epochs": int(proxy.epochs),
                     "lr": float(proxy.lr)},
           "train_epochs": int(cfg.train.epochs), "finetune_epochs": int(cfg.finetune.epochs),
           "finetune_data": cfg.threat.finetune_data,
           "dense": {name: metrics[f"{metric}_pruned"] for name, metric in MEASURES.items()},
           "finetuned": {name: metrics[metric] for name, metric in MEASURES.items()},
           "dense_success": metrics["threat/dense_success"],
           "poison_rate_applied": metrics.get("poison/rate_applied"), "cell_s": metrics["time/cell_s"]}
    print(f"{case} seed {seed} ({row['knowledge']}): dense ASR {row['dense']['asr']:.3f}, after the fine-tune "
          f"{row['finetuned']['asr']:.3f} ({row['cell_s']:.0f} s)", flush=True)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "results" / "clean_label_knowledge.json"))
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, of {', '.join(CASES)}")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds")
    parser.add_argument("--epochs", type=int, default=None,
                        help="the victim's and the proxy's epochs (default: the preset's)")
    parser.add_argument("--jobs", type=int, default=len(CASES), help="cases measured side by side")
    args = parser.parse_args(argv)
    cases = [c for c in args.cases.split(",") if c]
    if not cases or set(cases) - set(CASES):
        parser.exit(2, f"--cases={args.cases!r}: allowed: comma-separated names of {', '.join(CASES)}\n")
    seeds = [s for s in args.seeds.split(",") if s]
    if not seeds or not all(s.isdigit() for s in seeds):
        parser.exit(2, f"--seeds={args.seeds!r}: allowed: comma-separated whole numbers >= 0\n")
    seeds = [int(s) for s in seeds]
    if args.epochs is not None and args.epochs < 1:
        parser.exit(2, f"--epochs={args.epochs}: allowed: a whole number >= 1\n")
    jobs = [(case, seed, args.epochs) for seed in seeds for case in cases]
    started, load_before = time.perf_counter(), os.getloadavg()[0]
    with ProcessPoolExecutor(max_workers=args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        rows = list(pool.map(measure, jobs))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "overrides": list(OVERRIDES), "cases": {c: list(CASES[c]) for c in cases}, "seeds": seeds,
        "budget": "the backdoor preset's" if args.epochs is None else f"reduced: {args.epochs} epochs (victim and proxy)",
        "rows": rows, "machine": f"{platform.machine()} {platform.processor() or platform.system()}",
        "jobs": args.jobs, "load_avg_1m": [load_before, os.getloadavg()[0]],
        "total_s": time.perf_counter() - started}, indent=1) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
