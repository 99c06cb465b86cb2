"""Figures and tables as pure functions of the tracking store (`mlflow.search_runs` -> pandas), nothing else.

CLI: `python -m benchmark.figures --tracking-uri URI --experiment NAME --out results` writes
`<out>/figures/*.{png,pdf}` and `<out>/tables/*.{csv,md,tex}`. The notebook imports the same functions.

Declarative: to add a figure, append one `FigureSpec` to FIGURES (metric glob -> one panel per matching metric,
x = achieved sparsity, one line per pruning method, one file per model/dataset/threat) or one `ProfileSpec` to
PROFILES (x = eps / radius / fine-tune epoch, a panel per method, a line per sparsity); to add a summary column,
append one `Column` to SUMMARY_COLUMNS. Specs whose metrics are absent from the store are skipped.
"""
from __future__ import annotations

import argparse
import fnmatch
import logging
import re
import textwrap
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib import ticker  # noqa: E402
import mlflow  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from scipy import stats  # noqa: E402

from benchmark.hashing import DATASET_RUN_ONLY_KEYS, RUN_ONLY_KEYS  # noqa: E402

log = logging.getLogger("benchmark")

# Columns of the tidy frame (short names for the MLflow columns a figure groups by).
MODEL, DATASET, THREAT, METHOD, TARGET, SEED = "model", "dataset", "threat", "method", "target", "seed"
RUN_ID = "run_id"  # to read a run's logged curves (metric history)
VARIANT = "variant"  # other config keys on which cells of one point differ, e.g. "pruning.scope=layerwise"
PARAMS = {MODEL: "params.model.name", DATASET: "params.dataset.name", THREAT: "params.threat.name",
          METHOD: "params.pruning.method", TARGET: "params.pruning.sparsity", SEED: "params.seed"}
SETTING = [MODEL, DATASET, THREAT]  # one figure file per setting
POINT = [*SETTING, METHOD, VARIANT, TARGET]  # one plotted point (mean over seeds) per group
# Params that never make two cells different experiments: the run-only keys the cell hash leaves out.
NOT_VARIANT = {*(f"params.{k}" for k in RUN_ONLY_KEYS), *(f"params.dataset.{k}" for k in DATASET_RUN_ONLY_KEYS),
               *PARAMS.values()}
X_SPARSITY = "sparsity/achieved"
COLLAPSED, CHANCE = "clean/collapsed", "clean/chance"  # a model at chance level (benchmark/measure.py)
EFFECTIVE = "threat/effective"  # data threats: 0 when the attack does not succeed on the dense model
INEFFECTIVE_NOTE = "attack ineffective at this budget"
DENSE = "none"  # the dense baseline's pruning method
FLOAT_FORMAT = "%.4f"  # fixed float format: same data -> same bytes
CONFIDENCE = 0.95


@dataclass(frozen=True)
class FigureSpec:
    """One figure per setting: a panel per metric matching `metrics` (a glob over metric names) minus `exclude`."""
    name: str  # file stem: <name>__<model>__<dataset>__<threat>.{png,pdf}
    metrics: str
    ylabel: str
    x: str = X_SPARSITY
    xlabel: str = "achieved sparsity (fraction of prunable weights removed)"
    exclude: tuple[str, ...] = ()
    ylim: tuple[float, float] | None = (0.0, 1.02)
    logx: bool = False
    accuracy: bool = False  # an accuracy: draw the chance level
    threat_metric: bool = False  # measures the data threat's success: greyed out when it is ineffective
    front: bool = True  # x is a cost (not sparsity): draw the Pareto front of low x and high metric


FIGURES: list[FigureSpec] = [
    FigureSpec("robust_vs_sparsity", "robust/*/eps_*", "robust accuracy", accuracy=True,
               exclude=("robust/worst*", "robust/convergence*", "robust/*_x[0-9]*/*")),
    FigureSpec("worst_robust_vs_sparsity", "robust/worst/eps_*", "worst-case robust accuracy", accuracy=True),
    FigureSpec("clean_vs_sparsity", "clean/acc", "clean test accuracy", accuracy=True),
    FigureSpec("gap_vs_sparsity", "gap/acc", "generalisation gap (train - test acc)", ylim=None),
    FigureSpec("flip_rate_vs_sparsity", "forget/flip_rate", "share of test predictions changed from the dense model"),
    FigureSpec("max_class_drop_vs_sparsity", "forget/max_class_drop", "largest per-class accuracy drop", ylim=None),
    # Pareto view: cost against worst-case robustness, one panel per eps.
    FigureSpec("pareto_macs_vs_worst_robust", "robust/worst/eps_*", "worst-case robust accuracy",
               x="cost/macs", xlabel="MACs per image", logx=True, accuracy=True),
    FigureSpec("pareto_latency_vs_worst_robust", "robust/worst/eps_*", "worst-case robust accuracy",
               x="cost/latency_ms", xlabel="CPU latency per batch (ms)", logx=True, accuracy=True),
    # Poisoning and backdoors: one figure per threat variant (threat.name carries rate/stage/fine-tune data).
    FigureSpec("backdoor_asr_vs_sparsity", "backdoor/asr", "backdoor attack success rate", threat_metric=True),
    FigureSpec("backdoor_asr_vs_clean_acc", "backdoor/asr", "backdoor attack success rate", x="clean/acc",
               xlabel="clean test accuracy", threat_metric=True, front=False),  # bottom right: a good defence
    FigureSpec("backdoor_triggered_acc_vs_sparsity", "backdoor/clean_acc_triggered", "accuracy on triggered inputs",
               accuracy=True, threat_metric=True),
    FigureSpec("poison_damage_vs_sparsity", "poison/acc_drop", "clean acc drop vs unpoisoned model", ylim=None,
               threat_metric=True),
    FigureSpec("poison_targeted_vs_sparsity", "poison/targeted_success", "targeted poisoning success",
               threat_metric=True),
    # Strong evasion, certification, calibration, corruptions, interpretability.
    FigureSpec("worst_l2_robust_vs_sparsity", "robust/worst_l2/eps_*", "worst-case robust accuracy (L2)",
               accuracy=True),
    FigureSpec("convergence_gap_vs_sparsity", "robust/convergence_gap/eps_*", "PGD acc(B) - acc(m B), largest m",
               ylim=None),
    FigureSpec("gradient_masking_vs_sparsity", "robust/gradient_masking_margin", "PGD acc - weaker attack acc",
               ylim=None),
    FigureSpec("certified_vs_sparsity", "certified/acc/r_*", "certified accuracy (randomized smoothing)",
               accuracy=True),
    FigureSpec("ece_vs_sparsity", "calib/ece", "expected calibration error (15 bins)"),
    FigureSpec("nll_vs_sparsity", "calib/nll", "negative log-likelihood", ylim=None),
    FigureSpec("corruption_vs_sparsity", "corruption/*mean", "accuracy under corruption (mean over severities)",
               accuracy=True),
    FigureSpec("attribution_spearman_vs_sparsity", "interpret/*/spearman", "Spearman rank corr. with dense maps"),
    FigureSpec("attribution_topk_vs_sparsity", "interpret/*/topk_overlap", "top-10% overlap with dense maps"),
    FigureSpec("deletion_vs_sparsity", "interpret/*/deletion_auc", "deletion AUC (lower = more faithful)"),
]


@dataclass(frozen=True)
class ProfileSpec:
    """One figure per setting, a panel per method (variants apart), a line per target sparsity (dense `none` as a
    dashed reference in every panel). x is the number ending each metric matching `metrics` (eps, radius), or, with
    `history=True`, the MLflow step of the logged curve `metrics` (e.g. the fine-tune epoch)."""
    name: str
    metrics: str
    xlabel: str
    ylabel: str
    history: bool = False
    ylim: tuple[float, float] | None = (0.0, 1.02)
    accuracy: bool = False  # an accuracy: draw the chance level
    threat_metric: bool = False  # measures the data threat's success: greyed out when it is ineffective


PROFILES: list[ProfileSpec] = [
    ProfileSpec("worst_robust_vs_eps", "robust/worst/eps_*", "eps (L-inf, pixels in [0, 1])", "worst-case robust acc.",
                accuracy=True),
    ProfileSpec("certified_vs_radius", "certified/acc/r_*", "L2 radius", "certified accuracy (randomized smoothing)",
                accuracy=True),
    ProfileSpec("finetune_loss_vs_epoch", "finetune/loss", "fine-tune epoch", "mean training loss of the epoch", history=True,
                ylim=None),
    ProfileSpec("finetune_clean_acc_vs_epoch", "finetune/clean/acc", "fine-tune epoch (0 = just pruned)",
                "clean test accuracy", history=True, accuracy=True),
    ProfileSpec("finetune_asr_vs_epoch", "finetune/backdoor/asr", "fine-tune epoch (0 = just pruned)",
                "backdoor attack success rate", history=True, threat_metric=True),
    ProfileSpec("finetune_targeted_vs_epoch", "finetune/poison/targeted_success", "fine-tune epoch (0 = just pruned)",
                "targeted poisoning success", history=True, threat_metric=True),
]


@dataclass(frozen=True)
class Column:
    """One summary-table column: a metric glob (each match is a column) reported as mean (and ± CI)."""
    metrics: str
    exclude: tuple[str, ...] = ()
    ci: bool = True
    binomial: bool = False  # a robust accuracy: its 95% binomial interval over the test images it was measured on


SUMMARY_COLUMNS: list[Column] = [
    Column(X_SPARSITY, ci=False),
    Column("clean/acc"),
    Column("gap/acc"),
    Column("robust/worst/eps_*", binomial=True),
    Column("cost/macs", ci=False),
]


# ---------------------------------------------------------------------------------------------------- loading
def load_runs(tracking_uri: str, experiment: str) -> pd.DataFrame:
    """FINISHED cell runs of an experiment (grid parent runs dropped), as MLflow's frame."""
    mlflow.set_tracking_uri(tracking_uri)
    runs = mlflow.search_runs(experiment_names=[experiment], filter_string="attributes.status = 'FINISHED'",
                              output_format="pandas")
    if runs.empty:
        return runs
    if "tags.grid" in runs:
        runs = runs[runs["tags.grid"] != "true"]
    return runs[runs.get("tags.cell_hash", pd.Series(index=runs.index)).notna()].reset_index(drop=True)


def tidy(runs: pd.DataFrame) -> pd.DataFrame:
    """Group keys with short names and typed values, plus every `metrics.*` column under its metric name.

    A cell re-run with force=true has several FINISHED runs: keep the newest per cell hash."""
    if runs.empty:
        return pd.DataFrame(columns=[*PARAMS, VARIANT, RUN_ID])
    runs = runs.sort_values("start_time").drop_duplicates("tags.cell_hash", keep="last")
    frame = pd.DataFrame({short: runs[col] for short, col in PARAMS.items() if col in runs})
    frame[RUN_ID] = runs["run_id"] if "run_id" in runs else ""
    frame[TARGET] = frame[TARGET].astype(float)
    frame[SEED] = frame[SEED].astype(int)
    frame.insert(list(PARAMS).index(METHOD) + 1, VARIANT, variants(runs, frame))
    metrics = runs[[c for c in runs.columns if c.startswith("metrics.")]]
    frame = pd.concat([frame, metrics.rename(columns=lambda c: c[len("metrics."):])], axis=1)
    return frame.sort_values([*POINT, SEED]).reset_index(drop=True)


def variants(runs: pd.DataFrame, frame: pd.DataFrame) -> pd.Series:
    """Per run, "key=value, ..." over the params on which cells of one point (setting, method, target sparsity)
    differ: cells that differ in anything but the seed (e.g. pruning.scope, finetune.adversarial, train.epochs) are
    separate lines and rows, never averaged as if they were seeds. Keys are collected per (setting, method), so a
    line keeps one label across sparsities; params that only follow the target (threshold's rate) are not
    variants. Empty when every point has one configuration."""
    params = [c for c in runs.columns if c.startswith("params.") and c not in NOT_VARIANT]
    labels = pd.Series("", index=runs.index)
    for _, group in runs.groupby([frame[k] for k in (*SETTING, METHOD)], sort=False, dropna=False):
        points = group.groupby(frame.loc[group.index, TARGET], dropna=False)
        varying = [c for c in params if (points[c].agg(lambda v: v.astype(str).nunique()) > 1).any()]
        for index, row in group[varying].astype(str).iterrows():
            labels[index] = ", ".join(f"{c[len('params.'):]}={v}" for c, v in row.items())
    return labels


def matching(frame: pd.DataFrame, pattern: str, exclude: tuple[str, ...] = ()) -> list[str]:
    """Metric columns matching a glob, in natural order (eps_0.05 < eps_0.1 < eps_0.2)."""
    names = [c for c in frame.columns if "/" in c and fnmatch.fnmatchcase(c, pattern)
             and not any(fnmatch.fnmatchcase(c, e) for e in exclude) and frame[c].notna().any()]
    return sorted(names, key=_natural_key)


def _natural_key(name: str):
    return [float(part) if re.fullmatch(r"\d+(\.\d+)?", part) else part for part in re.split(r"_|/", name)]


# ---------------------------------------------------------------------------------------------------- statistics
def ci_halfwidth(values: pd.Series, confidence: float = CONFIDENCE) -> float:
    """Half-width of the Student-t interval of the mean; 0 for a single seed."""
    values = values.dropna()
    n = len(values)
    if n < 2:
        return 0.0
    return float(stats.t.ppf(0.5 + confidence / 2, n - 1) * values.std(ddof=1) / np.sqrt(n))


def binomial_interval(successes: int, trials: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Clopper-Pearson (exact) interval of a proportion: the sampling error of an accuracy measured on `trials`
    test images."""
    interval = stats.binomtest(successes, trials).proportion_ci(confidence_level=confidence, method="exact")
    return float(interval.low), float(interval.high)


def subset_size_metric(metric: str) -> str | None:
    """The metric holding the number of images a robust accuracy `robust/<attack or worst>/eps_<e>` was measured
    on (an attack without its own subset ran on the cell's, `robust/subset_size`)."""
    family, _, eps = metric.partition("/")[2].partition("/")
    if not metric.startswith("robust/") or not eps.startswith("eps_"):
        return None
    return f"robust/{family}/subset_size" if family.startswith("worst") else f"attack/{family}/subset_size"


def pooled_binomial_interval(group: pd.DataFrame, metric: str) -> tuple[float, float]:
    """The binomial interval of an accuracy pooled over a point's seeds (successes and images summed)."""
    size = subset_size_metric(metric)
    size = size if size in group and group[size].notna().any() else "robust/subset_size"
    if size not in group:
        return np.nan, np.nan
    ok = group[metric].notna() & group[size].notna()
    if not ok.any():
        return np.nan, np.nan
    trials = group.loc[ok, size].round().astype(int)
    return binomial_interval(int((group.loc[ok, metric] * trials).round().sum()), int(trials.sum()))


def aggregate(frame: pd.DataFrame, metrics: list[str], binomial: tuple[str, ...] = ()) -> pd.DataFrame:
    """Mean, 95% CI half-width, seed count and collapsed seeds per point (setting, method, target sparsity); for
    the metrics in `binomial`, also the pooled 95% binomial interval (`<m> binom95 low` / `high`)."""
    rows = []
    for key, group in frame.groupby(POINT, sort=True, dropna=False):
        row = dict(zip(POINT, key))
        row["n_seeds"] = int(group[SEED].nunique())
        row["n_collapsed"] = int((group[COLLAPSED] == 1).sum()) if COLLAPSED in group else 0
        for metric in metrics:
            row[metric] = float(group[metric].mean()) if group[metric].notna().any() else np.nan
            row[f"{metric} ci95"] = ci_halfwidth(group[metric])
            if metric in binomial:
                row[f"{metric} binom95 low"], row[f"{metric} binom95 high"] = pooled_binomial_interval(group, metric)
        rows.append(row)
    columns = [c for m in metrics for c in (m, f"{m} ci95", *((f"{m} binom95 low", f"{m} binom95 high")
                                                                if m in binomial else ()))]
    return pd.DataFrame(rows, columns=[*POINT, "n_seeds", "n_collapsed", *columns])


def pareto_front(points: pd.DataFrame, cost: str, value: str) -> pd.DataFrame:
    """Points not dominated by one that is at most as costly and at least as good (lower cost, higher value)."""
    ordered = points.dropna(subset=[cost, value]).sort_values([cost, value], ascending=[True, False])
    best, keep = -np.inf, []
    for index, row in ordered.iterrows():
        if row[value] > best:
            keep.append(index)
            best = row[value]
    return ordered.loc[keep]


def ineffective_share(cells: pd.DataFrame) -> float:
    """Share of a setting's cells whose data threat did not succeed on the dense model (`threat/effective` = 0)."""
    if EFFECTIVE not in cells or cells[EFFECTIVE].isna().all():
        return 0.0
    return float((cells[EFFECTIVE].dropna() == 0).mean())


# ---------------------------------------------------------------------------------------------------- figures
def settings(frame: pd.DataFrame) -> list[tuple]:
    return sorted(frame[SETTING].drop_duplicates().itertuples(index=False, name=None))


def plot_spec(frame: pd.DataFrame, spec: FigureSpec, setting: tuple):
    """The figure of one spec for one (model, dataset, threat); None when no metric matches.

    Points where a seed's model collapsed to chance are hollow; accuracies show the chance level; against
    sparsity the dense baseline is a dashed line; a data threat that failed on the dense model is greyed out."""
    sub = frame[(frame[SETTING] == pd.Series(setting, index=SETTING)).all(axis=1)]
    panels = matching(sub, spec.metrics, spec.exclude)
    if not panels or spec.x not in sub:
        return None
    agg = aggregate(sub, sorted({*panels, spec.x}))
    by_sparsity = spec.x == X_SPARSITY
    ineffective = ineffective_share(sub) if spec.threat_metric else 0.0
    fig, axes = _panel_grid(len(panels), share_y=spec.ylim is not None)
    lines = sorted(agg[[METHOD, VARIANT]].drop_duplicates().itertuples(index=False, name=None))
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
            _hollow_collapsed(ax, line, spec.x, metric, colors[method, variant])
        if not by_sparsity and spec.front:  # a cost axis: the Pareto front over all methods (collapsed: no result)
            front = pareto_front(agg[agg["n_collapsed"] == 0], spec.x, metric)
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
    _suptitle(fig, setting, int(agg["n_seeds"].max()), columns=axes.shape[1])
    _legend_below(fig, axes, top=0.95 if axes.shape[0] == 1 else 0.96, collapsed=bool((agg["n_collapsed"] > 0).any()))
    return fig


def _dense_baseline(ax, line: pd.DataFrame, metric: str, variant: str) -> None:
    """The dense model (`pruning=none`, one point at sparsity 0) as a dashed horizontal line, its interval shaded."""
    value, ci = line[metric].mean(), line[f"{metric} ci95"].mean()
    if np.isnan(value):
        return
    ax.axhline(value, color="black", linestyle="--", linewidth=1, label=_line_label("dense (none)", variant))
    if ci > 0:
        ax.axhspan(value - ci, value + ci, color="black", alpha=0.08, linewidth=0)


def _hollow_collapsed(ax, line: pd.DataFrame, x: str, metric: str, color) -> None:
    """Points where a seed's model sits at chance (`clean/collapsed`): a hollow marker over the filled one."""
    collapsed = line[line["n_collapsed"] > 0]
    if not collapsed.empty:
        ax.plot(collapsed[x], collapsed[metric], linestyle="none", marker="o", markersize=7,
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
        long["x"] = long["metric"].map(lambda name: _natural_key(name)[-1])
        return long.dropna(subset=["value"])[[*keys_marks, "x", "value"]]
    if spec.metrics not in frame:
        return pd.DataFrame(columns=[*keys_marks, "x", "value"])
    client = mlflow.MlflowClient(tracking_uri)
    rows = [{**{k: row[k] for k in keys_marks}, "x": m.step, "value": m.value}
            for _, row in frame[frame[spec.metrics].notna()].iterrows()
            for m in client.get_metric_history(row[RUN_ID], spec.metrics)]
    return pd.DataFrame(rows, columns=[*keys_marks, "x", "value"])


def plot_profile(points: pd.DataFrame, spec: ProfileSpec, setting: tuple, chance: float | None = None):
    """The profile figure of one (model, dataset, threat); None without data. A sparsity whose model collapsed to
    chance in any seed is drawn dotted with hollow markers; `chance` (accuracies) is drawn as a dotted grey line."""
    sub = points[(points[SETTING] == pd.Series(setting, index=SETTING)).all(axis=1)]
    if sub.empty:
        return None
    stats_ = sub.groupby([METHOD, VARIANT, TARGET, "x"]).agg(
        mean=("value", "mean"), ci=("value", ci_halfwidth), n=(SEED, "nunique"),
        collapsed=("collapsed", lambda v: bool((v == 1).any()))).reset_index()
    ineffective = ineffective_share(sub.rename(columns={"effective": EFFECTIVE})) if spec.threat_metric else 0.0
    dense = stats_[stats_[METHOD] == DENSE]
    panels = sorted(stats_[stats_[METHOD] != DENSE][[METHOD, VARIANT]].drop_duplicates()
                    .itertuples(index=False, name=None)) or [(DENSE, "")]
    fig, axes = _panel_grid(len(panels), share_y=spec.ylim is not None)
    targets = sorted(stats_[TARGET].unique())  # evenly spaced colours by rank: 0.9/0.95/0.99 stay apart
    color = {t: _greyed(plt.cm.viridis(0.9 * i / max(len(targets) - 1, 1)), ineffective == 1.0)
             for i, t in enumerate(targets)}
    for ax, (method, variant) in zip(axes.flat, panels):
        panel = stats_[(stats_[METHOD] == method) & (stats_[VARIANT] == variant)]
        for target, line in panel.groupby(TARGET):
            collapsed = bool(line["collapsed"].any())
            ax.errorbar(line["x"], line["mean"], yerr=line["ci"], color=color[target], marker="o",
                        markersize=5 if collapsed else 3, capsize=2, linestyle=":" if collapsed else "-",
                        markerfacecolor="white" if collapsed else color[target],
                        label=f"s={target:g}" + (" (collapsed)" if collapsed else ""))
        if method != DENSE:
            for _, line in dense.groupby([VARIANT, TARGET]):
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


# ---------------------------------------------------------------------------------------------------- tables
def summary_table(frame: pd.DataFrame, columns: list[Column] | None = None,
                  include_collapsed: bool = False) -> pd.DataFrame:
    """One row per (setting, method, target sparsity): mean (and 95% CI half-width) over seeds, sorted. Points
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
        if table.empty:
            continue
        written += [out / f"{name}.csv", out / f"{name}.md", out / f"{name}.tex"]
        table.to_csv(written[-3], index=False, float_format=FLOAT_FORMAT, lineterminator="\n")
        written[-2].write_text(to_markdown(table))
        written[-1].write_text(to_latex(table, caption=f"PruneSec Bench: {name} ({caption})",
                                        label=f"tab:prunesec-{name}"))
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
                text = str(value)
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


# ---------------------------------------------------------------------------------------------------- CLI
def regenerate(tracking_uri: str, experiment: str, out: Path | str,
               include_collapsed: bool = False) -> dict[str, list[Path]]:
    out = Path(out)
    frame = tidy(load_runs(tracking_uri, experiment))
    if frame.empty:
        raise SystemExit(f"no FINISHED runs in experiment {experiment!r} at {tracking_uri}: run a grid first "
                         f"(python -m benchmark.run -m experiment={experiment})")
    written = {"figures": write_figures(frame, out / "figures") + write_profiles(frame, out / "figures", tracking_uri),
               "tables": write_tables(frame, out / "tables", include_collapsed)}
    log.info("%d cells -> %d figure files in %s, %d table files in %s", len(frame), len(written["figures"]),
             out / "figures", len(written["tables"]), out / "tables")
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracking-uri", required=True, help="any MLflow URI: sqlite:///..., http://...")
    parser.add_argument("--experiment", required=True, help="MLflow experiment name (the preset's experiment_name)")
    parser.add_argument("--out", default="results", help="writes <out>/figures and <out>/tables")
    parser.add_argument("--include-collapsed", action="store_true",
                        help="keep points whose model collapsed to chance (clean/collapsed) in the tables")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    written = regenerate(args.tracking_uri, args.experiment, args.out, args.include_collapsed)
    print(f"{len(written['figures'])} figure files, {len(written['tables'])} table files under {args.out}")


if __name__ == "__main__":
    main()
