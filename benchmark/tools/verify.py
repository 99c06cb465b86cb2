"""Cross-check logged cells against their logged weights: `python -m benchmark.tools.verify` (`make verify`).

For a seeded sample of FINISHED cells (or all of them) it reads, through MLflow only, the resolved `config.yaml`
and the pruned weights `model/<pruned_key>.safetensors`, rebuilds the model, and recomputes three numbers with
code of its own:

- sparsity: the fraction of the dense architecture's prunable weights (conv and linear weights, the classifier
  head per `pruning.prune_head`) that are zero or absent in the logged tensors, against `sparsity/achieved`
  (tolerance 0.1 point);
- clean accuracy on the test split, against `clean/acc` (tolerance 0.5 point: the same model on the same images,
  only float rounding on near-ties differs);
- robust accuracy under L-inf PGD, re-run by the plain-torch loop below (not ART) at the logged budget on the logged
  subset, against `robust/pgd_linf/eps_<eps>`: an image counts when the model is right on it clean AND after the
  attack; the two agree when either lies inside the other's Wilson 95% interval on that subset's size.

Prints a progress line per cell and a table; exits 0 when every number is within tolerance, 1 when one is not (or a
cell cannot be checked), 2 on bad input. docs/verify.md says what is compared and why.
"""
from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F
from mlflow.artifacts import download_artifacts
from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf
from safetensors.torch import load_file
from statsmodels.stats.proportion import proportion_confint

from attacks.evasion_attacks import eps_key
from benchmark.data import Dataset, eval_subset, load_dataset
from benchmark.pruning.common import load_state_into
from benchmark.training import predict, resolve_device
from models import build_model, classifier_head

SPARSITY_TOLERANCE = 0.001  # 0.1 point
CLEAN_TOLERANCE = 0.005  # 0.5 point
CONFIDENCE = 0.95
PGD = "pgd_linf"


# ---------------------------------------------------------------------------------------------------- the checks
def pgd_linf_survivors(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, step: float, steps: int,
                       restarts: int, generator: torch.Generator, batch_size: int = 250) -> torch.Tensor:
    """Per image: still classified as `y` after L-inf PGD from every start (restarts = 0: one start at x; k > 0:
    k starts drawn uniformly in the eps ball). Sign-gradient ascent on the cross-entropy, each step projected onto
    the eps ball around x and clipped to [0, 1]. `model` is in eval mode; the random starts are drawn on the CPU."""
    device = next(model.parameters()).device
    survived = []
    for i in range(0, len(y), batch_size):
        xb, yb = x[i:i + batch_size].to(device), y[i:i + batch_size].to(device)
        ok = torch.ones(len(yb), dtype=torch.bool, device=device)
        for _ in range(max(1, restarts)):
            start = (torch.rand(xb.shape, generator=generator) * 2 - 1) * eps if restarts else torch.zeros(xb.shape)
            x_adv = (xb + start.to(device)).clamp(0, 1)
            for _ in range(steps):
                x_adv.requires_grad_(True)
                grad, = torch.autograd.grad(F.cross_entropy(model(x_adv), yb, reduction="sum"), x_adv)
                x_adv = (x_adv.detach() + step * grad.sign()).clamp(0, 1)
                x_adv = xb + (x_adv - xb).clamp(-eps, eps)
            with torch.no_grad():
                ok &= model(x_adv).argmax(1) == yb
        survived.append(ok.cpu())
    return torch.cat(survived)


def recount_sparsity(dense: nn.Module, state: dict[str, torch.Tensor], prune_head: bool) -> float:
    """Fraction of `dense`'s prunable weights (Conv2d and Linear weights; the last Linear, the head, only if
    `prune_head`) that are zero or absent in `state`, counted from the tensors alone."""
    head = classifier_head(dense)
    layers = [(name, m) for name, m in dense.named_modules()
              if isinstance(m, (nn.Conv2d, nn.Linear)) and (prune_head or m is not head)]
    total = sum(m.weight.numel() for _, m in layers)
    kept = sum(int(torch.count_nonzero(state[f"{name}.weight"])) for name, _ in layers if f"{name}.weight" in state)
    return 1.0 - kept / total


def wilson_interval(accuracy: float, n: int) -> tuple[float, float]:
    """Wilson score 95% interval of an accuracy measured on n images."""
    low, high = proportion_confint(round(accuracy * n), n, alpha=1 - CONFIDENCE, method="wilson")
    return max(0.0, float(low) - 1e-9), min(1.0, float(high) + 1e-9)  # its bound at 0 (or 1) carries rounding


# ---------------------------------------------------------------------------------------------------- one cell
@dataclass
class Row:
    """One comparison: a logged number, its recomputed value, the tolerance and whether they agree."""
    cell: str
    what: str  # "sparsity" | "clean" | "pgd eps=<eps>" | "pgd subset" | "error"
    logged: float | None
    recomputed: float | None
    tolerance: str
    ok: bool
    note: str = ""


@dataclass
class CellCheck:
    run: Run
    rows: list[Row] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.run.info.run_name

    @property
    def ok(self) -> bool:
        return all(row.ok for row in self.rows)


def _tolerance_row(cell: str, what: str, logged: float | None, recomputed: float, tolerance: float) -> Row:
    if logged is None:
        return Row(cell, what, None, recomputed, f"+-{tolerance:.4f}", False, "not logged")
    return Row(cell, what, logged, recomputed, f"+-{tolerance:.4f}", abs(recomputed - logged) <= tolerance)


def _interval_row(cell: str, what: str, logged: float | None, recomputed: float, n: int) -> Row:
    """Robust accuracies on the same n images agree when either lies in the other's Wilson 95% interval."""
    if logged is None:
        return Row(cell, what, None, recomputed, "-", False, "not logged")
    (lo_l, hi_l), (lo_r, hi_r) = wilson_interval(logged, n), wilson_interval(recomputed, n)
    ok = lo_l <= recomputed <= hi_l or lo_r <= logged <= hi_r
    return Row(cell, what, logged, recomputed, f"[{lo_l:.4f}, {hi_l:.4f}] / [{lo_r:.4f}, {hi_r:.4f}]", ok, f"n={n}")


def _logged_artifacts(client: MlflowClient, run_id: str, tmp: Path) -> tuple[object, dict[str, torch.Tensor]]:
    """The run's resolved config and pruned state dict, downloaded through MLflow."""
    config = download_artifacts(run_id=run_id, artifact_path="config.yaml", dst_path=str(tmp),
                                tracking_uri=client.tracking_uri)
    weights = [a.path for a in client.list_artifacts(run_id, "model") if a.path.endswith(".safetensors")]
    if len(weights) != 1:
        raise FileNotFoundError(f"expected one model/*.safetensors artifact, found {len(weights)}")
    path = download_artifacts(run_id=run_id, artifact_path=weights[0], dst_path=str(tmp),
                              tracking_uri=client.tracking_uri)
    return OmegaConf.load(config), load_file(path)


def check_cell(client: MlflowClient, run: Run, datasets: dict, device: torch.device, seed: int) -> CellCheck:
    check, name, metrics = CellCheck(run), run.info.run_name, run.data.metrics
    with tempfile.TemporaryDirectory(prefix="verify-") as tmp:
        cfg, state = _logged_artifacts(client, run.info.run_id, Path(tmp))
    data_key = (OmegaConf.to_yaml(cfg.dataset), int(cfg.seed))
    if data_key not in datasets:
        datasets[data_key] = load_dataset(cfg.dataset, int(cfg.seed))
    data: Dataset = datasets[data_key]

    dense = build_model(cfg.model.name, data.in_channels, data.image_size, data.num_classes)
    sparsity = recount_sparsity(dense, state, bool(cfg.pruning.prune_head))
    check.rows.append(_tolerance_row(name, "sparsity", metrics.get("sparsity/achieved"), sparsity,
                                     SPARSITY_TOLERANCE))

    model = load_state_into(build_model(cfg.model.name, data.in_channels, data.image_size, data.num_classes), state)
    model = model.to(device).eval().requires_grad_(False)
    clean = (predict(model, data.x_test, device).argmax(1) == data.y_test).float().mean().item()
    check.rows.append(_tolerance_row(name, "clean", metrics.get("clean/acc"), clean, CLEAN_TOLERANCE))

    attacks = [a for a in (cfg.threat.get("attacks") or []) if a.name == PGD]
    if attacks:
        check.rows.extend(_check_pgd(name, cfg, attacks[-1], metrics, model, data, seed))  # the last one logged
    return check


def _check_pgd(name: str, cfg, attack, metrics: dict, model: nn.Module, data: Dataset, seed: int) -> list[Row]:
    x, y = eval_subset(data, int(cfg.threat.subset), int(cfg.seed))
    n = min(int(attack.get("subset") or len(y)), len(y))
    x, y = x[:n], y[:n]
    logged_n = metrics.get(f"attack/{PGD}/subset_size", metrics.get("robust/subset_size"))
    rows = []
    if logged_n is not None and int(logged_n) != n:
        rows.append(Row(name, "pgd subset", logged_n, n, "equal", False, "logged subset size differs from config"))
    clean_ok = predict(model, x, next(model.parameters()).device).argmax(1) == y
    for eps in (float(e) for e in cfg.threat.eps):
        generator = torch.Generator().manual_seed(seed)
        survived = clean_ok if eps == 0 else pgd_linf_survivors(
            model, x, y, eps, eps * float(attack.step_fraction), int(attack.max_iter), int(attack.random_restarts),
            generator, int(attack.get("batch_size") or 250))
        robust = (clean_ok & survived).float().mean().item()
        rows.append(_interval_row(name, f"pgd eps={eps:g}", metrics.get(f"robust/{PGD}/{eps_key(eps)}"), robust, n))
    return rows


# ---------------------------------------------------------------------------------------------------- the store
class BadInput(Exception):
    """Stops verify before any compute, with one line saying what is wrong (exit code 2)."""


def finished_cells(client: MlflowClient, experiment: str) -> list[Run]:
    """FINISHED cell runs of `experiment` (grid parent runs, which carry no cell hash, left out), by run name."""
    found = client.get_experiment_by_name(experiment)
    if found is None:
        names = sorted(e.name for e in client.search_experiments())
        raise BadInput(f"--experiment={experiment!r} is not in the store at {client.tracking_uri}; "
                       f"experiments there: {names}")
    runs, token = [], None
    while True:
        page = client.search_runs([found.experiment_id], filter_string="attributes.status = 'FINISHED'",
                                  max_results=1000, page_token=token)
        runs += [r for r in page if "cell_hash" in r.data.tags and r.data.tags.get("grid") != "true"]
        token = page.token
        if not token:
            break
    if not runs:
        raise BadInput(f"--experiment={experiment!r} has no FINISHED cells at {client.tracking_uri}: run a grid first")
    return sorted(runs, key=lambda r: (r.info.run_name, r.info.run_id))


def sample_cells(runs: list[Run], size: int | None, seed: int) -> list[Run]:
    """A seeded sample of `size` runs (None: all) holding at least one structured and one unstructured cell when
    the store has both (so the sample may exceed `size` by one)."""
    if size is None or size >= len(runs):
        return runs
    rng = random.Random(seed)
    picked = []
    for structured in ("true", "false"):
        kind = [r for r in runs if r.data.tags.get("structured") == structured]
        if kind:
            picked.append(rng.choice(kind))
    picked_ids = {r.info.run_id for r in picked}
    rest = [r for r in runs if r.info.run_id not in picked_ids]
    picked += rng.sample(rest, max(0, min(size - len(picked), len(rest))))
    return sorted(picked, key=lambda r: (r.info.run_name, r.info.run_id))


def _store_exists(tracking_uri: str) -> None:
    """MLflow creates an empty SQLite store at a path that does not exist: refuse instead of creating one."""
    if tracking_uri.startswith("sqlite:///"):
        path = Path(tracking_uri[len("sqlite:///"):])  # sqlite:///relative or sqlite:////absolute
        if not path.is_file():
            raise BadInput(f"--tracking-uri={tracking_uri!r}: no SQLite store at {path}")


# ---------------------------------------------------------------------------------------------------- output
def table(checks: list[CellCheck]) -> pd.DataFrame:
    fmt = lambda v: "-" if v is None else f"{v:.4f}"
    out = []
    for check in checks:
        for row in check.rows:
            out.append({"cell": row.cell, "run": check.run.info.run_id[:8], "check": row.what,
                        "logged": fmt(row.logged), "recomputed": fmt(row.recomputed),
                        "tolerance (pgd: Wilson 95% logged / re-run)": row.tolerance,
                        "note": row.note, "verdict": "OK" if row.ok else "FAIL"})
    return pd.DataFrame(out)


def verify(tracking_uri: str, experiment: str, sample: int | None, seed: int, device_name: str) -> int:
    try:
        device = resolve_device(device_name)
    except ValueError as err:
        print(f"verify: --device={device_name!r}: {err}", file=sys.stderr)
        return 2
    try:
        _store_exists(tracking_uri)
        client = MlflowClient(tracking_uri=tracking_uri)
        cells = sample_cells(finished_cells(client, experiment), sample, seed)
    except BadInput as err:
        print(f"verify: {err}", file=sys.stderr)
        return 2
    except MlflowException as err:  # e.g. no tracking server at the URI
        print(f"verify: --tracking-uri={tracking_uri!r}: {str(err).splitlines()[0][:300]}", file=sys.stderr)
        return 2
    datasets: dict = {}
    checks = []
    for i, run in enumerate(cells, start=1):
        print(f"[verify {i}/{len(cells)}] {run.info.run_name} (run {run.info.run_id[:8]}):", end="", flush=True)
        started = time.perf_counter()
        try:
            check = check_cell(client, run, datasets, device, seed)
        except Exception as err:  # noqa: BLE001 - a cell that cannot be checked is reported, the others go on
            check = CellCheck(run, [Row(run.info.run_name, "error", None, None, "-", False,
                                        f"{type(err).__name__}: {err}"[:200])])
        checks.append(check)
        print(f" {'OK' if check.ok else 'FAIL'} in {time.perf_counter() - started:.1f}s", flush=True)
    with pd.option_context("display.max_rows", None, "display.max_columns", None, "display.width", 250,
                           "display.max_colwidth", 80):
        print(table(checks).to_string(index=False))
    failed = [c for c in checks if not c.ok]
    print(f"verify: {len(checks)} cells, {sum(len(c.rows) for c in checks)} comparisons, "
          f"{len(failed)} cells beyond tolerance" + (": " + ", ".join(c.name for c in failed) if failed else ""))
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracking-uri", required=True, help="any MLflow URI: sqlite:///..., http://...")
    parser.add_argument("--experiment", required=True, help="MLflow experiment name (the preset's experiment_name)")
    parser.add_argument("--sample", type=int, default=8, help="cells to check, seeded choice (default 8)")
    parser.add_argument("--all", action="store_true", help="check every FINISHED cell")
    parser.add_argument("--seed", type=int, default=0, help="seeds the sample and PGD's random starts")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"], help="default: cpu")
    args = parser.parse_args(argv)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one bar per download drowns the table
    if args.sample < 1:
        print(f"verify: --sample={args.sample}: must be at least 1 (or use --all)", file=sys.stderr)
        return 2
    return verify(args.tracking_uri, args.experiment, None if args.all else args.sample, args.seed, args.device)


if __name__ == "__main__":
    sys.exit(main())
