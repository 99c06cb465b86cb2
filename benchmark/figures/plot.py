"""Figures from the tidy frame: one file per setting (model, dataset, threat), drawn with matplotlib (Agg)."""
from __future__ import annotations

import re
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import mlflow  # noqa: E402
from matplotlib import ticker  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from benchmark.figures.frame import (CHANCE, COLLAPSED, DENSE, EFFECTIVE, INEFFECTIVE_NOTE, METHOD, POINT,  # noqa: E402
                                     RATE, RUN_ID, SEED, SETTING, TARGET, VARIANT, X_SPARSITY, aggregate, ci_halfwidth,
                                     ineffective_share, matching, natural_key, pareto_front, settings)
from benchmark.figures.pie import MIN_SEEDS, PIE_NULL, PIE_SHARE  # noqa: E402
from benchmark.figures.specs import FIGURES, PROFILES, FigureSpec, ProfileSpec  # noqa: E402

def plot_spec(frame: pd.DataFrame, spec: FigureSpec, setting: tuple):
    """The figure of one spec for one (model, dataset, threat); None when no metric matches.

    A cell whose model collapsed to chance is no result: it is a hollow marker of its own, never joined by a line
    or averaged into a mean; accuracies show the chance level; against sparsity the dense baseline is a dashed
    line; a data threat that failed on the dense model is greyed out."""
    sub = frame[(frame[SETTING] == pd.Series(setting, index=SETTING)).all(axis=1)]
    panels = matching(sub, spec.metrics, spec.exclude)
    if not panels or spec.x not in sub:
        return None
    is_collapsed = sub[COLLAPSED] == 1 if COLLAPSED in sub else pd.Series(False, index=sub.index)
    collapsed_cells = sub[is_collapsed]
    agg = aggregate(sub[~is_collapsed], sorted({*panels, spec.x}))
    by_sparsity = spec.x == X_SPARSITY
    ineffective = ineffective_share(sub) if spec.threat_metric else 0.0
    fig, axes = _panel_grid(len(panels), share_y=spec.ylim is not None)
    lines = sorted({*agg[[METHOD, VARIANT]].itertuples(index=False, name=None),
                    *collapsed_cells[[METHOD, VARIANT]].itertuples(index=False, name=None)})
    colors = {line: _greyed(plt.cm.tab10(i % 10), ineffective == 1.0) for i, line in enumerate(lines)}
    for ax, metric in zip(axes.flat, panels):
        for method, variant in lines:
            line = agg[(agg[METHOD] == method) & (agg[VARIANT] == variant)].sort_values(spec.x)
            if by_sparsity and method == DENSE:
                _dense_baseline(ax, line, metric, variant)
                continue
            ax.errorbar(line[spec.x], line[metric], yerr=line[f"{metric} ci95"], color=colors[method, variant],
                        label=_line_label(method, variant),
                        marker="o", markersize=3, capsize=2, linestyle="-" if by_sparsity else "none")
            cells = collapsed_cells[(collapsed_cells[METHOD] == method) & (collapsed_cells[VARIANT] == variant)]
            _hollow_collapsed(ax, cells, spec.x, metric, colors[method, variant])
        if not by_sparsity and spec.front:  # a cost axis: the Pareto front over all methods (collapsed: no result)
            front = pareto_front(agg, spec.x, metric)
            ax.step(front[spec.x], front[metric], where="post", color="black", linewidth=0.8, marker="s",
                    markersize=7, markerfacecolor="none", label="Pareto front")
        if spec.accuracy:
            _chance_line(ax, sub)
        if ineffective:
            _ineffective_note(ax, ineffective)
        ax.set_title(metric, fontsize=9)
        ax.set_xlabel(spec.xlabel, fontsize=8)
        ax.set_ylabel(spec.ylabel, fontsize=8)
        if spec.logx:  # costs span decades (structured) or a few percent (latency): 1-2-5 ticks, no minor labels
            ax.set_xscale("log")
            ax.xaxis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
            ax.xaxis.set_major_formatter(ticker.EngFormatter())
            ax.xaxis.set_minor_formatter(ticker.NullFormatter())
        if spec.ylim:
            ax.set_ylim(*spec.ylim)
        ax.grid(alpha=0.3)
    _suptitle(fig, setting, int(sub[SEED].nunique()), columns=axes.shape[1])
    _legend_below(fig, axes, top=0.95 if axes.shape[0] == 1 else 0.96, collapsed=not collapsed_cells.empty)
    return fig


def _dense_baseline(ax, line: pd.DataFrame, metric: str, variant: str) -> None:
    """The dense model (`pruning=none`, one point at sparsity 0) as a dashed horizontal line, its interval shaded."""
    value, ci = line[metric].mean(), line[f"{metric} ci95"].mean()
    if np.isnan(value):
        return
    ax.axhline(value, color="black", linestyle="--", linewidth=1, label=_line_label("dense (none)", variant))
    if ci > 0:
        ax.axhspan(value - ci, value + ci, color="black", alpha=0.08, linewidth=0)


def _hollow_collapsed(ax, cells: pd.DataFrame, x: str, metric: str, color) -> None:
    """Cells whose model sits at chance (`clean/collapsed`): one hollow marker per cell, no line, no mean."""
    cells = cells.dropna(subset=[x, metric]) if metric in cells and x in cells else cells.iloc[0:0]
    if not cells.empty:
        ax.plot(cells[x], cells[metric], linestyle="none", marker="o", markersize=7,
                markerfacecolor="white", markeredgecolor=color, zorder=3)


def _chance_line(ax, cells: pd.DataFrame) -> None:
    if CHANCE in cells and cells[CHANCE].notna().any():
        ax.axhline(float(cells[CHANCE].mean()), color="grey", linestyle=":", linewidth=1, label="chance")


def _ineffective_note(ax, share: float) -> None:
    note = INEFFECTIVE_NOTE if share == 1.0 else f"{INEFFECTIVE_NOTE} in {share:.0%} of the cells"
    ax.text(0.5, 0.5, note, transform=ax.transAxes, ha="center", va="center", fontsize=8, color="dimgrey",
            bbox={"facecolor": "white", "edgecolor": "lightgrey", "alpha": 0.85})


def _greyed(color, grey: bool):
    """A colour washed towards light grey: the curve of an attack that does not succeed on the dense model."""
    if not grey:
        return color
    return tuple(0.3 * c + 0.7 * g for c, g in zip(color[:3], (0.75, 0.75, 0.75))) + (1.0,)


def _legend_below(fig, axes, top: float, collapsed: bool = False) -> None:
    """One legend for all panels under them, in as many columns as fit the figure's width; the panels shrink
    to make room, so that no entry is cut off at the edge."""
    entries: dict[str, object] = {}
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            entries.setdefault(label, handle)
    if collapsed:
        entries["collapsed (clean acc. at chance)"] = plt.Line2D([], [], linestyle="none", marker="o", markersize=7,
                                                                 markerfacecolor="white", markeredgecolor="grey")
    renderer = fig.canvas.get_renderer()
    height = 0.0
    for ncol in range(min(len(entries), 7), 0, -1):
        legend = fig.legend(list(entries.values()), list(entries), loc="lower center", ncol=ncol, fontsize=8,
                            frameon=False)
        box = legend.get_window_extent(renderer)
        height = box.height / fig.bbox.height
        if ncol == 1 or box.width <= fig.bbox.width * 0.98:
            break
        legend.remove()
    fig.tight_layout(rect=(0, height + 0.01, 1, top))


def write_figures(frame: pd.DataFrame, out: Path, specs: list[FigureSpec] | None = None) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for spec in FIGURES if specs is None else specs:
        for setting in settings(frame):
            fig = plot_spec(frame, spec, setting)
            if fig is None:
                continue
            written += _save(fig, out, "__".join([spec.name, *map(_slug, setting)]))
    return written


def write_pie_figures(table: pd.DataFrame, out: Path) -> list[Path]:
    """`pie_share_vs_sparsity__<setting>`: the share of PIEs (benchmark/figures/pie.py's table) against achieved
    sparsity, a line per method, the dense model's own PIEs (fine-tuning alone) dashed, the null (two dense
    populations) dotted; one file per setting. A setting whose points have predictions from too few seeds gets a
    figure that says so instead of a curve."""
    written = []
    for setting in settings(table):
        rows = table[(table[SETTING] == pd.Series(setting, index=SETTING)).all(axis=1)]
        sub = rows.dropna(subset=[PIE_SHARE])
        if sub.empty and not (rows["n_seeds"] > 0).any():
            continue  # no cell logged predictions: nothing to say
        fig, axes = _panel_grid(1, share_y=False)
        ax = axes[0, 0]
        if sub.empty:
            ax.text(0.5, 0.5, f"not drawn: PIEs need populations of at least {MIN_SEEDS} seeds per point\n"
                              f"(Hooker et al. 2019); this grid has at most {int(rows['n_seeds'].max())}",
                    transform=ax.transAxes, ha="center", va="center", fontsize=8, color="dimgrey")
            ax.set_xticks([])
            ax.set_yticks([])
        lines = sub.groupby([METHOD, VARIANT], sort=True)
        for i, ((method, variant), line) in enumerate(lines):
            if method == DENSE:
                ax.axhline(line[PIE_SHARE].mean(), color="black", linestyle="--", linewidth=1,
                           label=_line_label("dense (none), fine-tuned", variant))
                continue
            line = line.sort_values(X_SPARSITY)
            ax.plot(line[X_SPARSITY], line[PIE_SHARE], color=plt.cm.tab10(i % 10), marker="o", markersize=3,
                    label=_line_label(method, variant))
        if not sub.empty and sub[PIE_NULL].notna().any():
            ax.axhline(sub[PIE_NULL].mean(), color="grey", linestyle=":", linewidth=1,
                       label="null: dense vs dense (seeds split in two)")
        ax.set_ylim(bottom=0.0)
        ax.set_xlabel("achieved sparsity (fraction of prunable weights removed)", fontsize=8)
        ax.set_ylabel("share of test images that are PIEs", fontsize=8)
        ax.grid(alpha=0.3)
        low, high = rows["n_seeds"].min(), rows["n_seeds"].max()
        seeds = f"{low}-{high}" if low < high else f"{high}"
        fig.suptitle(_wrap(f"{' / '.join(map(str, setting))} (pruning-identified exemplars over {seeds} seeds)", 60),
                     fontsize=10)
        _legend_below(fig, axes, top=0.93)
        out.mkdir(parents=True, exist_ok=True)
        written += _save(fig, out, "__".join(["pie_share_vs_sparsity", *map(_slug, setting)]))
    return written


def profile_points(frame: pd.DataFrame, spec: ProfileSpec, tracking_uri: str | None = None) -> pd.DataFrame:
    """Long frame (point, seed, collapsed, effective, x, value) of a profile: from metric names, or from each run's
    metric history."""
    keys = [*POINT, SEED]
    marks = frame[[c for c in (COLLAPSED, EFFECTIVE) if c in frame]].rename(
        columns={COLLAPSED: "collapsed", EFFECTIVE: "effective"})
    frame = pd.concat([frame, marks.reindex(columns=["collapsed", "effective"])], axis=1)
    keys_marks = [*keys, "collapsed", "effective"]
    if not spec.history:
        columns = matching(frame, spec.metrics)
        long = frame.melt(id_vars=keys_marks, value_vars=columns, var_name="metric", value_name="value")
        long["x"] = long["metric"].map(lambda name: natural_key(name)[-1])
        return long.dropna(subset=["value"])[[*keys_marks, "x", "value"]]
    if spec.metrics not in frame:
        return pd.DataFrame(columns=[*keys_marks, "x", "value"])
    client = mlflow.MlflowClient(tracking_uri)
    rows = [{**{k: row[k] for k in keys_marks}, "x": m.step, "value": m.value}
            for _, row in frame[frame[spec.metrics].notna()].iterrows()
            for m in client.get_metric_history(row[RUN_ID], spec.metrics)]
    return pd.DataFrame(rows, columns=[*keys_marks, "x", "value"])


def _amount(key) -> tuple[int, float]:
    """A point's amount from its (target, rate): (0, target sparsity) or (1, rate), sortable and hashable."""
    target, rate = key
    return (0, float(target)) if pd.isna(rate) else (1, float(rate))


def _amount_label(key) -> str:
    """`s=0.9` for a target sparsity, `rate=0.5` for threshold's rate (never shown as a sparsity)."""
    kind, value = _amount(key)
    return f"rate={value:g}" if kind else f"s={value:g}"


def plot_profile(points: pd.DataFrame, spec: ProfileSpec, setting: tuple, chance: float | None = None):
    """The profile figure of one (model, dataset, threat); None without data. A model that collapsed to chance is
    no result: its points are hollow markers of their own, never joined by a line or averaged with other seeds;
    `chance` (accuracies) is drawn as a dotted grey line."""
    sub = points[(points[SETTING] == pd.Series(setting, index=SETTING)).all(axis=1)]
    if sub.empty:
        return None
    is_collapsed = sub["collapsed"] == 1
    collapsed_points = sub[is_collapsed]
    amount = [TARGET, RATE]  # a line per amount: target sparsity, or threshold's rate
    stats_ = sub[~is_collapsed].groupby([METHOD, VARIANT, *amount, "x"], dropna=False).agg(
        mean=("value", "mean"), ci=("value", ci_halfwidth), n=(SEED, "nunique")).reset_index()
    ineffective = ineffective_share(sub.rename(columns={"effective": EFFECTIVE})) if spec.threat_metric else 0.0
    dense = stats_[stats_[METHOD] == DENSE]
    panels = sorted(sub[sub[METHOD] != DENSE][[METHOD, VARIANT]].drop_duplicates()
                    .itertuples(index=False, name=None)) or [(DENSE, "")]
    fig, axes = _panel_grid(len(panels), share_y=spec.ylim is not None)
    # evenly spaced colours by rank (0.9/0.95/0.99 stay apart); rates after the target sparsities
    amounts = sorted({_amount(row) for row in sub[amount].itertuples(index=False)}, key=lambda a: (a[0], a[1]))
    color = {a: _greyed(plt.cm.viridis(0.9 * i / max(len(amounts) - 1, 1)), ineffective == 1.0)
             for i, a in enumerate(amounts)}
    for ax, (method, variant) in zip(axes.flat, panels):
        panel = stats_[(stats_[METHOD] == method) & (stats_[VARIANT] == variant)]
        for key, line in panel.groupby(amount, dropna=False):
            ax.errorbar(line["x"], line["mean"], yerr=line["ci"], color=color[_amount(key)], marker="o",
                        markersize=3, capsize=2, linestyle="-", label=_amount_label(key))
        lost = collapsed_points[(collapsed_points[METHOD] == method) & (collapsed_points[VARIANT] == variant)]
        for key, cells in lost.groupby(amount, dropna=False):
            ax.plot(cells["x"], cells["value"], linestyle="none", marker="o", markersize=5,
                    markerfacecolor="white", markeredgecolor=color[_amount(key)],
                    label=f"{_amount_label(key)} (collapsed)")
        if method != DENSE:
            for _, line in dense.groupby([VARIANT, *amount], dropna=False):
                ax.plot(line["x"], line["mean"], color="black", linestyle="--", linewidth=1, label="dense (none)")
        if spec.accuracy and chance is not None:
            ax.axhline(chance, color="grey", linestyle=":", linewidth=1, label="chance")
        if ineffective:
            _ineffective_note(ax, ineffective)
        ax.set_title(_wrap(_line_label(method, variant), 40), fontsize=9)
        if spec.history:  # epochs
            ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
        ax.set_xlabel(spec.xlabel, fontsize=8)
        ax.set_ylabel(spec.ylabel, fontsize=8)
        if spec.ylim:
            ax.set_ylim(*spec.ylim)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, frameon=False)
    _suptitle(fig, setting, int(stats_["n"].max()), columns=axes.shape[1])
    fig.tight_layout(rect=(0, 0, 1, 0.93 if axes.shape[0] == 1 else 0.96))
    return fig


def write_profiles(frame: pd.DataFrame, out: Path, tracking_uri: str | None = None,
                   specs: list[ProfileSpec] | None = None) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for spec in PROFILES if specs is None else specs:
        points = profile_points(frame, spec, tracking_uri)
        for setting in settings(frame):
            fig = plot_profile(points, spec, setting, chance=_chance(frame, setting))
            if fig is not None:
                written += _save(fig, out, "__".join([spec.name, *map(_slug, setting)]))
    return written


def _chance(frame: pd.DataFrame, setting: tuple) -> float | None:
    if CHANCE not in frame:
        return None
    values = frame.loc[(frame[SETTING] == pd.Series(setting, index=SETTING)).all(axis=1), CHANCE].dropna()
    return float(values.mean()) if not values.empty else None


def _panel_grid(panels: int, share_y: bool):
    """Up to 4 panels per row (at least 6 in wide, so titles and legends fit); unused axes hidden."""
    cols = min(4, panels)
    rows = -(-panels // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(max(3.6 * cols, 6.0), 3.0 * rows), squeeze=False, sharey=share_y)
    for ax in list(axes.flat)[panels:]:
        ax.set_visible(False)
    return fig, axes


def _suptitle(fig, setting: tuple, n_seeds: int, columns: int) -> None:
    note = f"mean ± 95% CI over {n_seeds} seeds" if n_seeds > 1 else "1 seed"
    fig.suptitle(_wrap(f"{' / '.join(map(str, setting))} ({note})", max(18 * columns, 60)), fontsize=10)


def _line_label(method: str, variant: str) -> str:
    return f"{method} [{variant}]" if variant else method


def _save(fig, out: Path, stem: str) -> list[Path]:
    paths = []
    for ext, metadata in (("png", {"Software": None}), ("pdf", {"CreationDate": None, "Producer": None})):
        paths.append(out / f"{stem}.{ext}")
        fig.savefig(paths[-1], dpi=120, metadata=metadata)  # no timestamps: reruns give stable files
    plt.close(fig)
    return paths


def _wrap(text: str, width: int) -> str:
    """Long threat names (`badnets|r=0.1|prune_then_poison|ft=clean`) wrap at their `|` instead of running off."""
    return textwrap.fill(text.replace("|", " | "), width=width, break_long_words=False, break_on_hyphens=False)


def _slug(value) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", str(value))

