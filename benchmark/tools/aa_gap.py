"""How far the grid's headline robust accuracy is from the reference AutoAttack's: `make aa-gap`
(`python -m benchmark.tools.aa_gap`).

For a seeded sample of a grid's FINISHED, non-collapsed evasion cells it reloads, as `make verify` does (through
MLflow only), each cell's pruned weights and the images it attacked (`evasion/per_image.json`, rebuilt from the
dataset's files and checked against their logged sha256), and runs the reference standard AutoAttack
(`pyautoattack`, attacks/autoattack_reference.py) at every L-inf eps of the cell on the first `--images` of them.
Per cell and eps it compares, on those same images:

- the grid's headline worst case (`robust/worst/eps_<e>`), read from the record's per-image flags as the cell computed
  it (robust under every L-inf attack at this eps and every smaller one), and
- the reference AutoAttack's robust accuracy (right on the attacked image; an image it does not break is returned as
  itself).

gap = grid - AutoAttack, in accuracy (0.02 = 2 points; > 0: the grid is optimistic). The rule: gap <= --tolerance at
every eps of every sampled cell, and each cell's logged `robust/worst/eps_<e>` is its record's. The rows, the rule
and its verdict go under the key `aa_gap` of `--out` (results/perf.json; its other keys are kept), rewritten after
each eps (`complete` false until the last), so that a run cut short keeps what it measured. Exit 0 when the
rule holds, 1 when it does not (or a cell cannot be checked), 2 on bad input.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from benchmark.tools import verify
from models import build_from_config

TOLERANCE = 0.02  # 2 points
WORST = "robust/worst"


def grid_worst(record: dict, linf_attacks: set[str], n: int) -> dict[float, float]:
    """eps -> the grid's worst case over its L-inf attacks on the first `n` images of its record (per image: robust
    under every attack at this eps and at every smaller one; the attacks' flags cover the first `n` images)."""
    flags = {(name, float(eps)): verify.flags_of(f)[:n].numpy() for name, per_eps in record["robust"].items()
             if name in linf_attacks for eps, f in per_eps.items()}
    standing, worst = np.ones(n, dtype=bool), {}
    for eps in sorted({eps for _, eps in flags}):
        standing = standing & np.logical_and.reduce([ok for (_, e), ok in flags.items() if e == eps])
        worst[eps] = float(standing.mean())
    return worst


def robust_share(label: torch.Tensor, y: torch.Tensor) -> float:
    """The share of images whose attacked label is `y`, as a count over their number (in float64, like the grid's
    flags: a gap of exactly k images is k / n, not k / n plus float32 rounding)."""
    return int((label == y).sum()) / len(y)


def linf_attacks(cfg) -> set[str]:
    from attacks.evasion_attacks import ATTACKS

    return {a.name for a in cfg.threat.get("attacks") or [] if ATTACKS[a.name].norm == "linf"}


def check_cell(client: MlflowClient, run, splits: dict, args, device: torch.device, emit) -> None:
    """`emit(row)`: one row per eps of the cell as it is measured (or one row with an `error`)."""
    from attacks.autoattack_reference import standard_autoattack

    name, metrics = run.info.run_name, run.data.metrics
    with tempfile.TemporaryDirectory(prefix="aa-gap-") as tmp:
        cfg, state, record = verify.logged_artifacts(client, run.info.run_id, Path(tmp))
    if record is None:
        return emit({"cell": name, "error": f"no {verify.PER_IMAGE} artifact"})
    split_key = (str(cfg.dataset), int(cfg.seed))
    if split_key not in splits:
        splits[split_key] = verify.rebuild_test_split(cfg.dataset, int(cfg.seed))
    x_test, y_test = (torch.from_numpy(a) for a in splits[split_key])
    attacks = linf_attacks(cfg)
    n_record = min([len(f) for a in attacks for f in record["robust"].get(a, {}).values()] or [0])
    n = min(args.images, n_record)
    index = torch.tensor(record["index"][:n], dtype=torch.long)
    x, y = x_test[index], y_test[index]
    if verify.sha256_of(x.numpy()) != record["sha256"][:n] or y.tolist() != record["label"][:n]:
        return emit({"cell": name, "error": "the record's images or labels differ from the dataset's files"})

    shape = (x_test.shape[1], x_test.shape[-1], int(cfg.dataset.num_classes))
    model = verify.load_pruned(build_from_config(cfg.model, *shape), state).to(device).eval().requires_grad_(False)
    full, sample = grid_worst(record, attacks, n_record), grid_worst(record, attacks, n)
    collapsed = bool(metrics.get("clean/collapsed", 0.0))
    for eps in sorted(e for e in sample if e > 0):
        started = time.perf_counter()
        _, label = standard_autoattack(model, x, y, eps, "linf", int(cfg.dataset.num_classes), device, int(cfg.seed),
                                       args.max_iter, args.square_queries, args.batch_size)
        aa = robust_share(label.cpu(), y)
        logged = metrics.get(f"{WORST}/eps_{eps:g}")
        gap = sample[eps] - aa
        problems = []
        if logged is None or abs(logged - full[eps]) > 1e-9:
            problems.append(f"the logged {WORST}/eps_{eps:g}={logged} is not its record's {full[eps]:.4f}")
        if gap > args.tolerance + 1e-9 and not collapsed:
            problems.append(f"gap {gap:+.3f} beyond {args.tolerance:g}")
        seconds = time.perf_counter() - started
        print(f"  eps {eps:g}: grid {sample[eps]:.3f}, AutoAttack {aa:.3f}, gap {gap:+.3f} ({seconds:.0f} s)"
              f"{'; ' + '; '.join(problems) if problems else ''}", flush=True)
        emit({"cell": name, "run_id": run.info.run_id, "eps": eps, "images": n, "collapsed": collapsed,
              "grid_worst_logged": logged, "grid_worst": sample[eps], "aa_robust": aa, "gap": gap, "aa_s": seconds,
              "ok": not problems, "problems": problems})


def evasion_cells(client: MlflowClient, experiment: str) -> tuple[list, int]:
    """(FINISHED cells of `experiment` with a per-image record and an L-inf worst case, not collapsed; the number
    of collapsed ones left out)."""
    runs = [r for r in verify.finished_cells(client, experiment)
            if any(k.startswith(f"{WORST}/eps_") for k in r.data.metrics)]
    kept = [r for r in runs if not r.data.metrics.get("clean/collapsed", 0.0)]
    if not kept:
        raise verify.BadInput(f"--experiment={experiment!r} has no FINISHED, non-collapsed evasion cell with "
                              f"{WORST}/eps_* at {client.tracking_uri}")
    return kept, len(runs) - len(kept)


def write(out: Path, result: dict) -> None:
    """`result` under the key `aa_gap` of `out`, the file's other keys kept."""
    from benchmark.tools.perf import merge_into

    merge_into(out, {"aa_gap": result})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracking-uri", required=True, help="any MLflow URI: sqlite:///..., http://...")
    parser.add_argument("--experiment", required=True, help="MLflow experiment name (the preset's experiment_name)")
    parser.add_argument("--cells", type=int, default=4, help="cells to check, seeded choice (default 4)")
    parser.add_argument("--images", type=int, default=100, help="attacked images per cell, a prefix of its record")
    parser.add_argument("--seed", type=int, default=0, help="seeds the sample of cells")
    parser.add_argument("--max-iter", type=int, default=100, help="APGD and FAB iterations (the reference's: 100)")
    parser.add_argument("--square-queries", type=int, default=5000, help="Square's queries (the reference's: 5000)")
    parser.add_argument("--batch-size", type=int, default=250)
    parser.add_argument("--tolerance", type=float, default=TOLERANCE, help="largest gap allowed (0.02: 2 points)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"], help="default: cpu")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[2] / "results" / "perf.json")
    args = parser.parse_args(argv)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    for key in ("cells", "images", "max_iter", "square_queries", "batch_size"):
        if getattr(args, key) < 1:
            print(f"aa-gap: --{key.replace('_', '-')}={getattr(args, key)}: must be at least 1", file=sys.stderr)
            return 2
    if not 0 <= args.tolerance < 1:
        print(f"aa-gap: --tolerance={args.tolerance}: allowed 0 <= tolerance < 1 (an accuracy)", file=sys.stderr)
        return 2
    try:
        device = verify.resolve_device(args.device)
        verify.store_exists(args.tracking_uri)
        client = MlflowClient(tracking_uri=args.tracking_uri)
        runs, collapsed = evasion_cells(client, args.experiment)
    except ValueError as err:
        print(f"aa-gap: --device={args.device!r}: {err}", file=sys.stderr)
        return 2
    except verify.BadInput as err:
        print(f"aa-gap: {err}", file=sys.stderr)
        return 2
    except MlflowException as err:
        print(f"aa-gap: --tracking-uri={args.tracking_uri!r}: {str(err).splitlines()[0][:300]}", file=sys.stderr)
        return 2
    cells = verify.sample_cells(runs, args.cells, args.seed)
    started, rows, splits = time.perf_counter(), [], {}
    result = {"experiment": args.experiment, "cells": len(cells), "cells_available": len(runs),
              "collapsed_cells_left_out": collapsed, "images_per_cell": args.images, "sample_seed": args.seed,
              "max_iter": args.max_iter, "square_queries": args.square_queries, "device": str(device),
              "torch_threads": torch.get_num_threads(), "tolerance": args.tolerance,
              "rule": f"gap = grid {WORST} - reference AutoAttack robust accuracy <= {args.tolerance:g} at every eps "
                      "of every sampled non-collapsed cell, on the same images; the logged metric is its record's"}

    def emit(row: dict, complete: bool = False) -> None:
        """Adds a row (None: none) and rewrites the result, so that a run cut short keeps what it measured."""
        if row is not None:
            rows.append(row)
        failed = sorted({r["cell"] for r in rows if "error" in r or not r["ok"]})
        measured = [r for r in rows if "gap" in r and not r["collapsed"]]
        result.update({"complete": complete, "ok": complete and not failed, "failed_cells": failed,
                       "max_gap": max((r["gap"] for r in measured), default=None),
                       "wall_s": time.perf_counter() - started, "load_avg_1m_end": os.getloadavg()[0],
                       "rows": rows})
        write(args.out, result)

    for i, run in enumerate(cells, start=1):
        print(f"[aa-gap {i}/{len(cells)}] {run.info.run_name} (run {run.info.run_id[:8]})", flush=True)
        try:
            check_cell(client, run, splits, args, device, emit)
        except Exception as err:  # noqa: BLE001 - a cell that cannot be checked is reported, the others go on
            emit({"cell": run.info.run_name, "error": f"{type(err).__name__}: {err}"[:300]})
        if rows and rows[-1]["cell"] == run.info.run_name and "error" in rows[-1]:
            print(f"  cannot be checked: {rows[-1]['error']}", flush=True)
    emit(None, complete=True)
    failed = result["failed_cells"]
    verdict = f"every gap within {args.tolerance:g}" if not failed else f"{len(failed)} cells fail: {', '.join(failed)}"
    print(f"aa-gap: {len(cells)} cells, largest gap {result['max_gap']}, {verdict}; written to {args.out} (key aa_gap)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
