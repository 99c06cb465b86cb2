"""Performance budget, measured in one run: `make perf` (or `python -m benchmark.tools.perf`).

1. `pgd`: PGD (L-inf, 10 steps, 1,000 mnist5k test images, seed_cnn) through our ART wrapper vs a plain torch loop
   doing the same attack; the outputs are compared (max |x_adv difference|, same robust accuracy).
2. `evasion`: the default grid's evasion (conf/threat/evasion.yaml: FGSM, PGD-10, APGD-DLR-20, APGD-T at the 4 eps
   on the cell's 500 seeded test images) the old way, every attack at every eps on every image from scratch and
   judged on its final output, against the grid's own path (attacks/evasion.py: every PGD iterate judged, each eps
   attacking only the images still robust), on the same model and images, in alternated pairs: the ratio of their
   wall times.
3. `stages`: one default-grid cell (seed_cnn, magnitude_global at 0.9) into a fresh store, one torch thread: its
   time per stage (time/* metrics: data, train, prune, finetune, measure, security, attack, threat, bookkeeping).
4. `grids`: a cell's bookkeeping (config, hashing, MLflow, caching) vs its compute: time/bookkeeping_s /
   time/cell_s; re-running a finished grid vs its first run (every cell skipped as FINISHED);
   `hydra/launcher=parallel` (joblib, n_jobs=2) vs sequential on the same grid. A reduced grid (seed_cnn on mnist5k,
   2 methods x 2 sparsities + pruning=none).
5. `default_grid`: the default grid (`experiment=default`, 84 jobs) as `make benchmark` launches it (joblib, one
   worker per core, one torch thread each): its first run into a fresh store, then its re-run, in wall time and in
   CPU time of the processes (the first run takes most of `make perf`'s time).
`--parts` picks some (default: all). Prints a table and writes the measured keys into results/perf.json, keeping the
keys of the parts not run (and `aa_gap`, `make aa-gap`'s). `--profile` prints where the wrapper's PGD time goes.
"""
from __future__ import annotations

import argparse
import cProfile
import json
import os
import platform
import pstats
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[2]
GRID = ["dataset=mnist5k", "model=seed_cnn", "threat=pgd", "device=cpu", "train.epochs=3",
        "pruning=none,magnitude_global,random", "pruning.sparsity=0.5,0.9"]  # 6 jobs, 5 cells


def pgd_setup(n: int):
    """A trained seed_cnn, 1,000 mnist5k test images and the PGD parameters of conf/threat/pgd.yaml."""
    from omegaconf import OmegaConf

    from benchmark.data import load_dataset
    from benchmark.training import fit
    from models import build_model

    data = load_dataset(OmegaConf.load(ROOT / "conf" / "dataset" / "mnist5k.yaml"), seed=0)
    torch.manual_seed(0)
    model = build_model("seed_cnn", 1, 28, 10)
    fit(model, data.x_train, data.y_train, epochs=2, lr=1e-3, batch_size=64, seed=0, device=torch.device("cpu"),
        desc="perf model")
    params = OmegaConf.create({"max_iter": 10, "step_fraction": 0.25, "random_restarts": 0, "batch_size": 250})
    return model.eval(), data.x_test[:n].contiguous(), data.y_test[:n], params


def wrapper_pgd(model, x: torch.Tensor, y: torch.Tensor, eps: float, params) -> np.ndarray:
    """Our path: attacks/art_classifier.py + the `pgd_linf` builder of attacks/evasion_attacks/pgd.py."""
    from attacks.art_classifier import art_classifier, frozen_parameters, to_numpy
    from attacks.evasion_attacks import EVASION_ATTACKS

    build = EVASION_ATTACKS["pgd_linf"].target
    with frozen_parameters(model):
        classifier = art_classifier(model, tuple(x.shape[1:]), 10, torch.device("cpu"))
        return build(classifier, eps, params).generate(x=to_numpy(x), y=y.numpy())


def torch_pgd(model, x: torch.Tensor, y: torch.Tensor, eps: float, params, channels_last: bool = True) -> np.ndarray:
    """The same attack as a plain loop: ART's update (sign of the mean-CE gradient, step, clip to [0, 1],
    project onto the eps ball around x), batch by batch, no random start (random_restarts=0 on both sides).
    channels_last as in our wrapper (the same float rounding, so the outputs can be compared bit for bit)."""
    step, out = eps * params.step_fraction, []
    model.requires_grad_(False)
    model.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    for i in range(0, len(x), params.batch_size):
        xb, yb = x[i:i + params.batch_size], y[i:i + params.batch_size]
        adv = xb.clone()
        for _ in range(params.max_iter):
            adv.requires_grad_(True)
            grad, = torch.autograd.grad(F.cross_entropy(model(adv), yb), adv)
            adv = (adv.detach() + step * grad.sign()).clamp(0.0, 1.0)
            adv = xb + (adv - xb).clamp(-eps, eps)
        out.append(adv.detach())
    model.requires_grad_(True)
    model.to(memory_format=torch.contiguous_format)
    return torch.cat(out).numpy()


def _timed(fn) -> tuple[float, object]:
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def _paired(fn_a, fn_b, repeats: int) -> tuple[list[float], list[float], object, object]:
    """Alternate a and b so both see the same load on a shared machine; the ratio is the median of pair ratios."""
    times_a, times_b = [], []
    for _ in range(repeats):
        t_a, out_a = _timed(fn_a)
        t_b, out_b = _timed(fn_b)
        times_a.append(t_a)
        times_b.append(t_b)
    return times_a, times_b, out_a, out_b


def measure_pgd(repeats: int, profile: bool) -> dict:
    model, x, y, params = pgd_setup(1000)
    eps = 0.1
    wrapper_pgd(model, x[:250], y[:250], eps, params)  # warm-up (first-call allocations, ART imports)
    torch_pgd(model, x[:250], y[:250], eps, params)
    ours_t, plain_t, ours, plain = _paired(lambda: wrapper_pgd(model, x, y, eps, params),
                                           lambda: torch_pgd(model, x, y, eps, params), repeats)
    ratio = float(np.median([a / b for a, b in zip(ours_t, plain_t)]))
    contiguous_s, contiguous = _timed(lambda: torch_pgd(model, x, y, eps, params, channels_last=False))
    with torch.no_grad():
        acc = [float((model(torch.from_numpy(a)).argmax(1) == y).float().mean()) for a in (ours, plain)]
    if profile:
        profiler = cProfile.Profile()
        profiler.runcall(wrapper_pgd, model, x, y, eps, params)
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)
    return {"pgd_wrapper_s": min(ours_t), "pgd_torch_s": min(plain_t), "pgd_ratio": ratio,
            "pgd_ratio_of_best_times": min(ours_t) / min(plain_t),
            "pgd_pairs_s": [[round(a, 3), round(b, 3)] for a, b in zip(ours_t, plain_t)],
            "pgd_max_abs_diff": float(np.abs(ours - plain).max()), "pgd_robust_acc_wrapper": acc[0],
            "pgd_robust_acc_torch": acc[1], "pgd_torch_contiguous_s": contiguous_s,
            "pgd_share_pixels_differing_from_contiguous": float((np.abs(ours - contiguous) > 1e-6).mean()),
            "pgd_images": len(y), "pgd_eps": eps, "pgd_steps": params.max_iter,
            "pgd_batch_size": params.batch_size}


def default_grid_config():
    """The default grid's composed config (its dataset and threat), as `make benchmark` composes a cell of it."""
    from benchmark.validate import compose_config

    return compose_config(["experiment=default", "device=cpu"])


def old_evasion(model, x: torch.Tensor, y: torch.Tensor, threat_cfg, seed: int) -> dict[tuple[str, float], np.ndarray]:
    """The default grid's evasion the old way: every attack of `threat_cfg` at every eps on every image, from
    scratch (ART's attack as its builder makes it, final iterate only), robust = right on the clean image and on the
    attack's output. (attack, eps) -> per image: robust."""
    from attacks.art_classifier import art_classifier, frozen_parameters, to_numpy
    from attacks.evasion_attacks import ATTACKS

    x_np, y_np, robust = to_numpy(x), y.numpy(), {}
    with frozen_parameters(model):
        classifier = art_classifier(model, tuple(x.shape[1:]), 10, torch.device("cpu"))
        clean_ok = classifier.predict(x_np).argmax(1) == y_np
        for attack in threat_cfg.attacks:
            for eps in sorted(float(e) for e in threat_cfg.eps):
                np.random.seed(seed)
                x_adv = ATTACKS[attack.name].build(classifier, eps, attack).generate(x=x_np, y=y_np)
                robust[(attack.name, eps)] = clean_ok & (classifier.predict(x_adv, batch_size=attack.batch_size)
                                                         .argmax(1) == y_np)
    return robust


def new_evasion(model, data, threat_cfg, seed: int) -> dict[str, float]:
    """The grid's evasion path itself (attacks/evasion.py): the metrics it logs."""
    from attacks import build_threat

    return build_threat(threat_cfg).evaluate(model, data, torch.device("cpu"), seed).metrics


def measure_evasion(repeats: int) -> dict:
    """Old vs new evasion (module docstring, item 2) on a trained seed_cnn and the default grid's 500 images."""
    from attacks.evasion import worst_case
    from benchmark.data import load_dataset, seeded_indices

    load = os.getloadavg()[0]
    cfg = default_grid_config()
    model, _, _, _ = pgd_setup(1)
    data = load_dataset(cfg.dataset, cfg.seed)
    index = seeded_indices(len(data.y_test), cfg.threat.subset, cfg.seed)
    x, y = data.x_test[index].contiguous(), data.y_test[index]
    old_t, new_t, old, new = _paired(lambda: old_evasion(model, x, y, cfg.threat, cfg.seed),
                                     lambda: new_evasion(model, data, cfg.threat, cfg.seed), repeats)
    eps_values = sorted(float(e) for e in cfg.threat.eps)
    old_worst = {eps: acc for eps, (acc, _) in worst_case(old, "linf").items()}
    return {"evasion_old_s": min(old_t), "evasion_new_s": min(new_t),
            "evasion_new_over_old": float(np.median([b / a for a, b in zip(old_t, new_t)])),
            "evasion_pairs_s": [[round(a, 3), round(b, 3)] for a, b in zip(old_t, new_t)],
            "evasion_images": len(y), "evasion_eps": eps_values, "evasion_load_avg_1m": [load, os.getloadavg()[0]],
            "evasion_attacks": [a.name for a in cfg.threat.attacks],
            "evasion_old_worst": [old_worst[e] for e in eps_values],
            "evasion_new_worst": [new[f"robust/worst/eps_{e:g}"] for e in eps_values]}


def measure_stages(workdir: Path) -> dict:
    """One default-grid cell into a fresh store (so it trains its dense model), one torch thread: its time per
    stage as it logs them (time/*), and the wall time of the process that ran it."""
    import mlflow

    results, load = workdir / "stages", os.getloadavg()[0]
    cell = ["dataset=mnist5k", "threat=evasion", "experiment_name=default", "model=seed_cnn",
            "pruning=magnitude_global", "pruning.sparsity=0.9", "hydra/launcher=basic", "torch_threads=1"]
    wall_s, _ = _run_grid(results, cell)

    mlflow.set_tracking_uri(f"sqlite:///{results / 'mlflow.db'}")
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list",
                              filter_string="attributes.status = 'FINISHED'")
    metrics = next(r.data.metrics for r in runs if "time/cell_s" in r.data.metrics)
    stages = {k.split("/", 1)[1]: v for k, v in sorted(metrics.items()) if k.startswith("time/")}
    return {"cell_stages_run": "seed_cnn|magnitude_global|s=0.9|evasion|seed=0", "cell_stages_s": stages,
            "cell_process_wall_s": wall_s, "cell_stages_load_avg_1m": [load, os.getloadavg()[0]]}


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _run_grid(results: Path, overrides: list[str]) -> tuple[float, float]:
    """Wall and CPU seconds of one grid run (`python -m benchmark.run -m ...`) into the store under `results`."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    started, cpu = time.perf_counter(), _children_cpu_s()
    subprocess.run([sys.executable, "-m", "benchmark.run", "-m", *overrides, f"results_dir={results}"],
                   cwd=ROOT, env=env, check=True, capture_output=True, text=True)
    return time.perf_counter() - started, _children_cpu_s() - cpu


def _grid(results: Path, *extra: str) -> float:
    return _run_grid(results, [*GRID, *extra])[0]


def _startup_s() -> float:
    """What a re-run of a finished grid pays before it looks its cells up: starting Python and importing what the
    grid's pre-check needs (Hydra, the schema, the hashing, MLflow), not torch."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import benchmark.run, benchmark.hashing, benchmark.tracking"],
                   cwd=ROOT, check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    return time.perf_counter() - started


def _cell_times(results: Path) -> tuple[float, float, int]:
    """Sums over the store's FINISHED cells of time/bookkeeping_s and time/cell_s, and their number."""
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{results / 'mlflow.db'}")
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list",
                              filter_string="attributes.status = 'FINISHED'")
    cells = [r.data.metrics for r in runs if "time/cell_s" in r.data.metrics]
    return (sum(m["time/bookkeeping_s"] for m in cells), sum(m["time/cell_s"] for m in cells), len(cells))


def measure_grids(workdir: Path) -> dict:
    seq, par = workdir / "sequential", workdir / "parallel"
    load = {"load_avg_1m_before_grids": os.getloadavg()[0]}
    first_s = _grid(seq, "hydra/launcher=basic")
    rerun_s = _grid(seq, "hydra/launcher=basic")
    parallel_s = _grid(par, "hydra/launcher=parallel", "hydra.launcher.n_jobs=2")
    load["load_avg_1m_after_grids"] = os.getloadavg()[0]
    bookkeeping_s, cell_s, cells = _cell_times(seq)
    _, parallel_cell_s, _ = _cell_times(par)
    startup_s = _startup_s()
    return {**load, "grid_jobs": 6, "grid_cells": cells, "grid_first_s": first_s, "grid_rerun_s": rerun_s,
            "grid_rerun_ratio": rerun_s / first_s, "process_startup_s": startup_s,
            "grid_rerun_minus_startup_ratio": max(rerun_s - startup_s, 0.0) / max(first_s - startup_s, 1e-9),
            "cell_bookkeeping_s": bookkeeping_s, "cell_s": cell_s, "bookkeeping_share": bookkeeping_s / cell_s,
            "grid_parallel_s": parallel_s, "parallel_speedup": first_s / parallel_s,
            "cell_s_sum_parallel": parallel_cell_s}  # > cell_s: each cell ran slower in parallel (contention)


def default_grid_launcher() -> list[str]:
    """`make benchmark`'s launcher on this machine (Makefile: LAUNCHER): joblib with one worker per core and one
    torch thread each, or one cell after another on one core."""
    cores = os.cpu_count() or 1
    return (["hydra/launcher=basic"] if cores == 1 else
            ["hydra/launcher=parallel", f"hydra.launcher.n_jobs={cores}", "torch_threads=1"])


def measure_default_grid(workdir: Path) -> dict:
    """The default grid's first run into a fresh store and its re-run (every cell skipped as FINISHED)."""
    launcher, results = default_grid_launcher(), workdir / "default"
    print(f"default grid: first run (84 jobs, {' '.join(launcher)}; the longest part of make perf)...", flush=True)
    load = {"load_avg_1m_before_default_grid": os.getloadavg()[0]}
    first_s, first_cpu_s = _run_grid(results, ["experiment=default", *launcher])
    load["load_avg_1m_after_default_grid"] = os.getloadavg()[0]
    rerun_s, rerun_cpu_s = _run_grid(results, ["experiment=default", *launcher])
    _, cell_s, cells = _cell_times(results)
    return {**load, "default_grid_launcher": " ".join(launcher), "default_grid_cells": cells,
            "default_grid_first_s": first_s, "default_grid_rerun_s": rerun_s,
            "default_grid_rerun_ratio": rerun_s / first_s, "default_grid_first_cpu_s": first_cpu_s,
            "default_grid_rerun_cpu_s": rerun_cpu_s, "default_grid_rerun_cpu_ratio": rerun_cpu_s / first_cpu_s,
            "default_grid_cell_s_sum": cell_s}


BUDGET = {"pgd_ratio": ("<=", 1.2), "bookkeeping_share": ("<=", 0.10), "default_grid_rerun_ratio": ("<=", 0.05),
          "parallel_speedup": (">=", 1.7)}


def table(result: dict) -> str:
    lines = [f"{'measure':34} {'value':>10}  budget"]
    for key, value in result.items():
        if isinstance(value, float):
            goal = BUDGET.get(key)
            mark = "" if goal is None else f"{goal[0]} {goal[1]}  " + (
                "ok" if (value <= goal[1] if goal[0] == "<=" else value >= goal[1]) else "MISSED")
            lines.append(f"{key:34} {value:10.4g}  {mark}")
    return "\n".join(lines)


PARTS = ("pgd", "evasion", "stages", "grids", "default_grid")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(ROOT / "results" / "perf.json"))
    parser.add_argument("--repeats", type=int, default=5, help="alternating pairs for the PGD ratio (median)")
    parser.add_argument("--evasion-repeats", type=int, default=3, help="alternating pairs, old vs new evasion")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, of {', '.join(PARTS)}")
    parser.add_argument("--profile", action="store_true", help="cProfile of the wrapper's PGD")
    args = parser.parse_args(argv)
    parts = [p for p in args.parts.split(",") if p]
    if not parts or any(p not in PARTS for p in parts):
        print(f"perf: --parts={args.parts!r}: allowed: a comma-separated selection of {', '.join(PARTS)}",
              file=sys.stderr)
        sys.exit(2)
    torch.set_num_threads(1)  # both PGD paths on one thread: a fair, repeatable comparison on a shared machine
    result = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.processor() or platform.node()}",
              "torch": torch.__version__, "torch_threads_pgd": 1, "load_avg_1m_start": os.getloadavg()[0],
              "parts": parts}
    if "pgd" in parts:
        result.update(measure_pgd(args.repeats, args.profile))
    if "evasion" in parts:
        result.update(measure_evasion(args.evasion_repeats))
    workdir = Path(tempfile.mkdtemp(prefix="prunesec-perf-"))
    try:
        if "stages" in parts:
            result.update(measure_stages(workdir))
        if "grids" in parts:
            result.update(measure_grids(workdir))
        if "default_grid" in parts:
            result.update(measure_default_grid(workdir))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    result["load_avg_1m_end"] = os.getloadavg()[0]
    print(table(result))
    merge_into(Path(args.out), result)
    return result


def merge_into(out: Path, entries: dict) -> None:
    """`entries` written into the JSON file `out`, its other keys kept (perf.json gathers several tools' parts)."""
    kept = json.loads(out.read_text()) if out.is_file() else {}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({**kept, **entries}, indent=1))


if __name__ == "__main__":
    main()
