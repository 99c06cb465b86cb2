"""`make reproduce TARGET=<preset>`: run a reproduction preset's cells (or read the finished ones from the tracking
store) and compare them with the published numbers.

    python -m benchmark.tools.reproduce TARGET [--results results] [--tracking-uri URI] [--no-run] [KEY=VALUE ...]

A preset is `reproduce/<target>.yaml` (docs/reproduce.md): its source (paper, table, row), the cell overrides and
the grids to sweep, and rows: a metric of the cells a `where` selects (the mean over seeds; minus the mean of the
cells `minus` selects, for a difference), the published value, a tolerance (null: reported, not checked), and the
remaining differences in setting. The cells are identified by their hash, exactly as a grid identifies them: the
ones already FINISHED in the experiment `reproduce_<target>` are read, the others run through
`python -m benchmark.run -m`, as `make benchmark` runs a grid. KEY=VALUE overrides are added to every cell
(e.g. dataset.data_root=/data) and passed to the grid (e.g. hydra/launcher=parallel hydra.launcher.n_jobs=4).

Prints published / measured / difference / within tolerance per row, writes results/reproduce/<target>.json and
.md. Exit codes: 0 every checked row is within its tolerance; 1 a row is outside it, or a cell failed; 2 nothing
was compared: no or an unknown target, a preset that does not validate, or the data or the CUDA GPU the preset's
missing cells need (one line naming what is missing).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from benchmark.version import RESULTS_VERSION

ROOT = Path(__file__).resolve().parents[2]
PRESETS = ROOT / "benchmark" / "reproduce_presets"
OUT_DIR = "reproduce"  # under the results directory
EXIT_OUTSIDE, EXIT_NOT_RUN = 1, 2
DATA_NAMES = {"cifar10": "CIFAR-10", "svhn": "SVHN", "mnist": "MNIST", "fashion_mnist": "Fashion-MNIST"}


class PresetError(Exception):
    """A preset that cannot be compared here: one line saying why."""


class Row(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    metric: str  # an MLflow metric a cell logs, e.g. clean/acc
    where: dict[str, Any]  # config key -> value: the cells whose metric is averaged (over seeds)
    minus: dict[str, Any] | None = None  # the cells whose mean is subtracted: the row is a difference
    published: float
    tolerance: Annotated[float, Field(ge=0)] | None  # |measured - published| <= it; None: reported, not checked
    cited: str  # where in the source the number is (table, row, column)
    note: str = ""


class Preset(BaseModel):
    model_config = ConfigDict(extra="forbid")
    title: str
    cited_as: str  # the source in a few words (the docs' table)
    source: str  # the paper and the table the rows come from
    url: str
    expected_time: str
    depends_on: list[str] = []  # keys this preset needs that the suite does not have yet
    overrides: list[str]  # Hydra overrides of every cell
    # sweeps, each crossed with the overrides (as Hydra's sweeper params: key -> comma-separated values)
    grids: Annotated[list[dict[str, str]], Field(min_length=1)]
    rows: Annotated[list[Row], Field(min_length=1)]
    tolerances: str = ""  # what the tolerances absorb, where the rows do not say
    differences: Annotated[list[str], Field(min_length=1)]  # every remaining difference in setting from the source


def targets() -> list[str]:
    return sorted(path.stem for path in PRESETS.glob("*.yaml"))


def load_preset(path: Path) -> Preset:
    try:
        data = yaml.safe_load(path.read_text())
        return Preset.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        key = ".".join(str(part) for part in first["loc"])
        raise PresetError(f"{path}: {key}: {first['msg']} (got {first.get('input')!r})") from None
    except (OSError, yaml.YAMLError) as err:
        raise PresetError(f"{path}: {type(err).__name__}: {err}") from None


# ------------------------------------------------------------------------------------------- what a preset needs
def _compose(overrides: list[str], sweep: dict[str, str] | None = None):
    """The config (with Hydra's) of `overrides`, and the sweep's params set as a grid preset sets them."""
    from hydra import compose
    from omegaconf import open_dict

    config = compose(config_name="config", overrides=overrides, return_hydra_config=True)
    with open_dict(config):
        config.hydra.sweeper.params = dict(sweep or {})
    return config


def _depends(preset: Preset) -> str:
    return f" (this preset depends on: {'; '.join(preset.depends_on)})" if preset.depends_on else ""


def composed(preset: Preset, overrides: list[str], sweep: dict[str, str] | None = None):
    """The config of `overrides` (and a sweep), or the one line of a composition that fails."""
    from benchmark.exit_codes import one_line

    try:
        return _compose(overrides, sweep)
    except Exception as err:  # noqa: BLE001 - Hydra's composition errors: one line, as the grid reports them
        raise PresetError(f"{one_line(err)}{_depends(preset)}") from None


def missing_requirements(preset: Preset, extra: list[str]) -> tuple[list[str], bool]:
    """(what is missing here, whether the data is among it): the dataset's files under data_root (unless it may
    download them), a CUDA GPU for `device=cuda`. Read from the overrides of the dataset and the device alone, so
    what is missing is said first, even where another key of the preset does not compose yet."""
    from benchmark.datasets import DATASETS
    from benchmark.hashing import device_type

    config = composed(preset, [o for o in [*preset.overrides, *extra]
                               if o.split("=", 1)[0].lstrip("+~") in ("dataset", "device")
                               or o.lstrip("+~").startswith("dataset.")])
    missing, data_missing = [], False
    dataset = config.dataset
    files = DATASETS[dataset.name].files if dataset.name in DATASETS else ()
    if files and not dataset.get("download"):
        root = Path(dataset.get("data_root") or ".").expanduser().resolve()
        absent = [name for name in files if not (root / name).is_file()]
        if absent:
            missing.append(f"{DATA_NAMES.get(dataset.name, dataset.name)} under {root} ({absent[0]} is missing; "
                           "dataset.data_root=DIR names another folder)")
            data_missing = True
    if config.device == "cuda" and device_type("auto") != "cuda":  # torch is imported only where a driver is
        missing.append("a CUDA GPU (torch sees none here)")
    return missing, data_missing


# ---------------------------------------------------------------------------------------------------- the cells
def compose_jobs(preset: Preset, extra: list[str]) -> list[tuple[int, Any]]:
    """(grid index, Job) for every job of every grid, composed and hashed as the grid's own pre-check does it."""
    from benchmark.grid import check_jobs

    jobs = []
    for index, sweep in enumerate(preset.grids):
        errors, checked = check_jobs(composed(preset, [*preset.overrides, *extra], sweep))
        if errors:
            raise PresetError(f"grid {index + 1}: {errors[0]}{_depends(preset)}")
        jobs += [(index, job) for job in checked]
    return jobs


def run_grid(preset: Preset, index: int, run_keys: list[str], extra: list[str], sweep_dir: Path) -> int:
    """One grid of the preset through `python -m benchmark.run -m` (it skips the cells already FINISHED), its
    ledger and logs in a folder of its own."""
    sweep = [f"{key}={value}" for key, value in preset.grids[index].items()]
    command = [sys.executable, "-m", "benchmark.run", "-m", *preset.overrides, *sweep, *run_keys, *extra,
               f"hydra.sweep.dir={sweep_dir / f'grid{index + 1}'}"]
    print("$", " ".join(command), flush=True)
    return subprocess.run(command, cwd=ROOT).returncode


def finished_metrics(tracking_uri: str, experiment: str, hashes: set[str]) -> dict[str, dict[str, float]]:
    """Cell hash -> its metrics, for the cells among `hashes` FINISHED in the experiment."""
    from mlflow.tracking import MlflowClient

    from benchmark.tracking import finished_cells

    finished = {h: run for h, run in finished_cells(tracking_uri, experiment).items() if h in hashes}
    if not finished:  # a store not yet created stays uncreated
        return {}
    client = MlflowClient(tracking_uri)
    return {h: client.get_run(run_id).data.metrics for h, (run_id, _) in finished.items()}


# ----------------------------------------------------------------------------------------------------- the rows
def _selected(jobs: list, where: dict[str, Any], row: str) -> list:
    from omegaconf import OmegaConf

    chosen = [job for _, job in jobs if all(OmegaConf.select(job.cfg, key) == value for key, value in where.items())]
    if not chosen:
        raise PresetError(f"row {row!r}: no cell of the grids has {where}")
    return chosen


def _mean(jobs: list, metrics: dict[str, dict[str, float]], metric: str, row: str) -> tuple[float, int]:
    values = [metrics[job.cell_hash].get(metric) for job in jobs]
    if any(v is None for v in values):
        raise PresetError(f"row {row!r}: a selected cell logged no metric {metric!r}")
    return sum(values) / len(values), len(values)


def compare(preset: Preset, jobs: list, metrics: dict[str, dict[str, float]]) -> list[dict]:
    """One result per row: published, measured (mean over the selected cells, minus the `minus` cells' mean),
    difference, and whether it is within the tolerance (None: not checked)."""
    results = []
    for row in preset.rows:
        measured, cells = _mean(_selected(jobs, row.where, row.name), metrics, row.metric, row.name)
        if row.minus is not None:
            baseline, more = _mean(_selected(jobs, row.minus, row.name), metrics, row.metric, row.name)
            measured, cells = measured - baseline, cells + more
        difference = measured - row.published
        within = None if row.tolerance is None else abs(difference) <= row.tolerance + 1e-12
        results.append({"name": row.name, "metric": row.metric, "where": row.where, "minus": row.minus,
                        "published": row.published, "measured": measured, "difference": difference,
                        "tolerance": row.tolerance, "within": within, "cells": cells, "cited": row.cited,
                        "note": row.note})
    return results


def _verdict(within: bool | None) -> str:
    return "not checked" if within is None else ("yes" if within else "NO")


def markdown(target: str, preset: Preset, report: dict) -> str:
    lines = [f"# `{target}`: {preset.title}", "", f"Source: {preset.source} ({preset.url}).", "",
             "| row | metric | published | measured | difference | tolerance | within tolerance |",
             "|---|---|---|---|---|---|---|"]
    for row in report["rows"]:
        tolerance = "—" if row["tolerance"] is None else f"±{row['tolerance']:.4f}"
        lines.append(f"| {row['name']} | `{row['metric']}` | {row['published']:.4f} | {row['measured']:.4f} | "
                     f"{row['difference']:+.4f} | {tolerance} | {_verdict(row['within'])} |")
    lines += ["", f"Status: **{report['status']}**, measured {report['measured_at']} (cells: {report['cells']}, "
              f"{report['cells_run']} run now, {report['seconds']:.0f} s).", "", "Remaining differences in setting:",
              "", *(f"- {d}" for d in preset.differences), ""]
    return "\n".join(lines)


def print_table(report: dict) -> None:
    header = f"{'row':<40} {'published':>10} {'measured':>10} {'difference':>11} {'tolerance':>10}  within"
    print(header)
    for row in report["rows"]:
        tolerance = "-" if row["tolerance"] is None else f"{row['tolerance']:.4f}"
        print(f"{row['name'][:40]:<40} {row['published']:>10.4f} {row['measured']:>10.4f} "
              f"{row['difference']:>+11.4f} {tolerance:>10}  {_verdict(row['within'])}")


# ----------------------------------------------------------------------------------------------------- the tool
def reproduce(target: str, preset: Preset, results: Path, tracking_uri: str, extra: list[str], run: bool) -> dict:
    """Compare the preset's cells with its published numbers; runs the cells not yet FINISHED unless `run` is
    False. Raises PresetError when nothing can be compared."""
    from hydra import initialize_config_dir

    started = time.perf_counter()
    experiment = f"reproduce_{target}"
    run_keys = [f"results_dir={results}", f"tracking_uri={tracking_uri}", f"experiment_name={experiment}"]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        missing, data_missing = missing_requirements(preset, extra)
        if data_missing:  # a built-in dataset's cells are identified by its files' content: nothing to look up
            raise PresetError(f"needs {' and '.join(missing)}")
        jobs = compose_jobs(preset, [*extra, *run_keys])
    hashes = {job.cell_hash for _, job in jobs}
    metrics = finished_metrics(tracking_uri, experiment, hashes)
    todo = sorted({index for index, job in jobs if job.cell_hash not in metrics})
    if todo and missing:
        raise PresetError(f"needs {' and '.join(missing)} for its {len(hashes) - len(metrics)} cells not yet "
                          f"FINISHED in {experiment!r}")
    if todo and not run:
        raise PresetError(f"{len(hashes) - len(metrics)} of its {len(hashes)} cells are not FINISHED in "
                          f"{experiment!r} (--no-run)")
    before = len(metrics)
    sweep_dir = results / "hydra" / "reproduce" / target / datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    failed = [index + 1 for index in todo if run_grid(preset, index, run_keys, extra, sweep_dir) != 0]
    if todo:
        metrics = finished_metrics(tracking_uri, experiment, hashes)
    if len(metrics) < len(hashes):
        raise RuntimeError(f"{len(hashes) - len(metrics)} cells did not finish (grids {failed or 'all ran'}): "
                           "see their logs above")
    rows = compare(preset, jobs, metrics)
    checked = [row["within"] for row in rows if row["within"] is not None]
    return {"target": target, "results_version": RESULTS_VERSION, "title": preset.title, "source": preset.source,
            "url": preset.url,
            "status": "within tolerance" if all(checked) else "outside tolerance",
            "measured_at": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "cells": len(hashes),
            "cells_run": len(hashes) - before, "seconds": time.perf_counter() - started,
            "experiment": experiment, "rows": rows, "differences": preset.differences}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target", nargs="?", default="", help=f"a preset of {PRESETS.relative_to(ROOT)}/")
    parser.add_argument("overrides", nargs="*", help="KEY=VALUE overrides for every cell and the grid")
    parser.add_argument("--preset", help="a preset file to use instead of benchmark/reproduce_presets/<target>.yaml")
    parser.add_argument("--results", default=str(ROOT / "results"), help="the results directory")
    parser.add_argument("--tracking-uri", help="the tracking store (default: sqlite:///<results>/mlflow.db)")
    parser.add_argument("--no-run", action="store_true", help="only read FINISHED cells; run none")
    args = parser.parse_intermixed_args(argv)
    if not args.target:
        print(f"reproduce: name a target (make reproduce TARGET=...); targets: {', '.join(targets())}",
              file=sys.stderr)
        return EXIT_NOT_RUN
    path = Path(args.preset) if args.preset else PRESETS / f"{args.target}.yaml"
    if not path.is_file():
        print(f"reproduce: TARGET={args.target!r} is not a preset; targets: {', '.join(targets())}", file=sys.stderr)
        return EXIT_NOT_RUN
    from benchmark.tracking_store import default_tracking_uri

    results = Path(args.results).resolve()
    tracking_uri = args.tracking_uri or default_tracking_uri(results)
    try:
        preset = load_preset(path)
        report = reproduce(args.target, preset, results, tracking_uri, args.overrides, run=not args.no_run)
    except PresetError as err:
        print(f"reproduce {args.target}: {err}", file=sys.stderr)
        return EXIT_NOT_RUN
    except RuntimeError as err:
        print(f"reproduce {args.target}: {err}", file=sys.stderr)
        return EXIT_OUTSIDE
    out = results / OUT_DIR
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.target}.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / f"{args.target}.md").write_text(markdown(args.target, preset, report))
    print_table(report)
    print(f"{report['status']}: {out / args.target}.json, .md ({report['seconds']:.0f} s)")
    return 0 if report["status"] == "within tolerance" else EXIT_OUTSIDE


if __name__ == "__main__":
    sys.exit(main())
