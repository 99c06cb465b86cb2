"""Figures and tables from a tracking store: `python -m benchmark.figures --tracking-uri URI --experiment NAME`."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from benchmark.figures.frame import load_runs, log, tidy
from benchmark.figures.pie import CLASS_IMPACT_CAPTION, PIE_CAPTION, forgetting_tables
from benchmark.figures.plot import write_figures, write_pie_figures, write_profiles
from benchmark.figures.tables import write_table, write_tables

def regenerate(tracking_uri: str, experiment: str, out: Path | str,
               include_collapsed: bool = False) -> dict[str, list[Path]]:
    out = Path(out)
    frame = tidy(load_runs(tracking_uri, experiment))
    if frame.empty:
        raise SystemExit(f"no FINISHED runs in experiment {experiment!r} at {tracking_uri}: run a grid first "
                         f"(python -m benchmark.run -m experiment={experiment})")
    pies, class_impact = forgetting_tables(frame, tracking_uri, experiment, include_collapsed)
    written = {"figures": write_figures(frame, out / "figures") + write_profiles(frame, out / "figures", tracking_uri)
               + write_pie_figures(pies, out / "figures"),
               "tables": write_tables(frame, out / "tables", include_collapsed)
               + write_table(pies, out / "tables", "pie", PIE_CAPTION)
               + write_table(class_impact, out / "tables", "class_impact", CLASS_IMPACT_CAPTION)}
    log.info("%d cells -> %d figure files in %s, %d table files in %s", len(frame), len(written["figures"]),
             out / "figures", len(written["tables"]), out / "tables")
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmark.figures", description=__doc__.splitlines()[0])
    parser.add_argument("--tracking-uri", required=True, help="any MLflow URI: sqlite:///..., http://...")
    parser.add_argument("--experiment", required=True, help="MLflow experiment name (the preset's experiment_name)")
    parser.add_argument("--out", default="results", help="writes <out>/figures and <out>/tables")
    parser.add_argument("--include-collapsed", action="store_true",
                        help="keep points whose model collapsed to chance (clean/collapsed) in the tables")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    written = regenerate(args.tracking_uri, args.experiment, args.out, args.include_collapsed)
    print(f"{len(written['figures'])} figure files, {len(written['tables'])} table files under {args.out}")

