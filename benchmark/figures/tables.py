"""Tables from the tidy frame: summary, Pareto and convergence, as CSV, Markdown and LaTeX (fixed float format)."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from benchmark.figures.frame import (FLOAT_FORMAT, METHOD, POINT, RATE, SETTING, VARIANT, X_SPARSITY, aggregate,
                                     matching, pareto_front, settings)
from benchmark.figures.specs import SUMMARY_COLUMNS, Column

def summary_table(frame: pd.DataFrame, columns: list[Column] | None = None,
                  include_collapsed: bool = False) -> pd.DataFrame:
    """One row per (setting, method, target sparsity or rate): mean (and 95% CI half-width) over seeds, sorted. Points
    where a seed's model collapsed to chance are left out unless `include_collapsed` (then `n_collapsed` says
    how many seeds did)."""
    chosen = [(m, c) for c in (SUMMARY_COLUMNS if columns is None else columns)
              for m in matching(frame, c.metrics, c.exclude)]
    agg = aggregate(frame, [m for m, _ in chosen], binomial=tuple(m for m, c in chosen if c.binomial))
    drop = [f"{m} ci95" for m, c in chosen if not c.ci]
    return _collapsed_rows(agg, include_collapsed).drop(columns=drop).sort_values(POINT).reset_index(drop=True)


def _collapsed_rows(agg: pd.DataFrame, include_collapsed: bool) -> pd.DataFrame:
    if include_collapsed:
        return agg
    return agg[agg["n_collapsed"] == 0].drop(columns=["n_collapsed"])


def pareto_table(frame: pd.DataFrame, eps_metric: str | None = None, include_collapsed: bool = False) -> pd.DataFrame:
    """Pareto-optimal points (MACs vs worst-case robust accuracy at the largest eps) per setting; collapsed
    points are no result and left out unless `include_collapsed`."""
    worst = matching(frame, "robust/worst/eps_*")
    if not worst or "cost/macs" not in frame:
        return pd.DataFrame()
    metric = eps_metric or worst[-1]
    agg = _collapsed_rows(aggregate(frame, ["cost/macs", metric, "clean/acc", X_SPARSITY], binomial=(metric,)),
                          include_collapsed)
    fronts = [pareto_front(agg[(agg[SETTING] == pd.Series(s, index=SETTING)).all(axis=1)], "cost/macs", metric)
              for s in settings(frame)]
    table = pd.concat(fronts).drop(columns=["cost/macs ci95", f"{X_SPARSITY} ci95"])
    return table.sort_values([*SETTING, "cost/macs"]).reset_index(drop=True)


def convergence_table(frame: pd.DataFrame) -> pd.DataFrame:
    """PGD's convergence gap (acc(B) - acc(m x B), `robust/convergence_gap*`) per setting and method, at the most
    sparse non-collapsed point that ran the check (for `none`: the dense model)."""
    gaps = matching(frame, "robust/convergence_gap*/eps_*")
    if not gaps:
        return pd.DataFrame()
    agg = aggregate(frame, [X_SPARSITY, *gaps])
    ran = agg[agg[gaps].notna().any(axis=1) & (agg["n_collapsed"] == 0)]
    picked = ran.loc[ran.groupby([*SETTING, METHOD, VARIANT], dropna=False)[X_SPARSITY].idxmax()]
    return picked[[*POINT, "n_seeds", X_SPARSITY, *gaps]].sort_values(POINT).reset_index(drop=True)


def write_tables(frame: pd.DataFrame, out: Path, include_collapsed: bool = False) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    left_out = "" if include_collapsed else "; points where a seed's model collapsed to chance are left out"
    for name, table, caption in (
            ("summary", summary_table(frame, include_collapsed=include_collapsed),
             f"mean $\\pm$ 95\\% CI over seeds, [95\\% binomial interval over the test images]{left_out}"),
            ("pareto", pareto_table(frame, include_collapsed=include_collapsed),
             f"Pareto front, MACs vs worst-case robust accuracy{left_out}"),
            ("convergence", convergence_table(frame),
             "PGD convergence gap acc(B) - acc(m B), most sparse non-collapsed point per method")):
        written += write_table(table, out, name, caption)
    return written


def write_table(table: pd.DataFrame, out: Path, name: str, caption: str) -> list[Path]:
    """`<out>/<name>.{csv,md,tex}`; nothing for an empty table. The `rate` column only where a point has one
    (threshold's)."""
    if table.empty:
        return []
    if RATE in table and table[RATE].isna().all():
        table = table.drop(columns=RATE)
    out.mkdir(parents=True, exist_ok=True)
    written = [out / f"{name}.csv", out / f"{name}.md", out / f"{name}.tex"]
    table.to_csv(written[0], index=False, float_format=FLOAT_FORMAT, lineterminator="\n")
    written[1].write_text(to_markdown(table))
    written[2].write_text(to_latex(table, caption=f"PruneSec Bench: {name} ({caption})", label=f"tab:prunesec-{name}"))
    return written


_BINOMIAL = (" binom95 low", " binom95 high")


def _cells(table: pd.DataFrame, pm: str) -> tuple[list[str], list[list[str]]]:
    """Header and string cells, with each `<m> ci95` folded into its `<m>` column as `mean pm ci` and each
    binomial interval after it as `[low, high]`."""
    metrics = [c for c in table.columns if not c.endswith((" ci95", *_BINOMIAL))]
    rows = []
    for _, row in table.iterrows():
        cells = []
        for c in metrics:
            value = row[c]
            if isinstance(value, float):
                text = "" if np.isnan(value) else _fmt(value)
                if f"{c} ci95" in table and row["n_seeds"] > 1 and not np.isnan(value):
                    text += f"{pm}{_fmt(row[f'{c} ci95'])}"
                if f"{c}{_BINOMIAL[0]}" in table and not np.isnan(row[f"{c}{_BINOMIAL[0]}"]):
                    text += f" [{_fmt(row[f'{c}{_BINOMIAL[0]}'])}, {_fmt(row[f'{c}{_BINOMIAL[1]}'])}]"
            else:
                text = "" if value is pd.NA else str(value)
            cells.append(text)
        rows.append(cells)
    return metrics, rows


def _fmt(value: float) -> str:
    return f"{value:.3g}" if abs(value) >= 1000 else f"{value:.3f}"


def to_markdown(table: pd.DataFrame) -> str:
    # hand-written: pandas' to_markdown needs the `tabulate` package, which is not a dependency
    header, rows = _cells(table, " ± ")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def to_latex(table: pd.DataFrame, caption: str, label: str) -> str:
    """A booktabs table (needs \\usepackage{booktabs}) ready to \\input into a paper."""
    header, rows = _cells(table, " $\\pm$ ")
    esc = lambda s: s.replace("_", "\\_").replace("%", "\\%").replace("&", "\\&")  # noqa: E731
    align = "".join("r" if all(_is_number(r[i]) for r in rows) else "l" for i in range(len(header)))
    body = [" & ".join(esc(h) for h in header) + " \\\\", "\\midrule"]
    body += [" & ".join(esc(c) for c in r) + " \\\\" for r in rows]
    return "\n".join(["\\begin{table}[t]", "\\centering", "\\scriptsize", f"\\caption{{{caption}}}",
                      f"\\label{{{label}}}", f"\\begin{{tabular}}{{{align}}}", "\\toprule", *body, "\\bottomrule",
                      "\\end{tabular}", "\\end{table}"]) + "\n"


def _is_number(text: str) -> bool:
    return bool(re.match(r"^-?[\d.e+-]+", text)) or text == ""

