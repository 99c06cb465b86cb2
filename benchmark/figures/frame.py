"""The tidy data frame of a tracking store's FINISHED runs, and the statistics figures and tables show."""
from __future__ import annotations

import fnmatch
import logging
import re

import mlflow
import numpy as np
import pandas as pd
from scipy import stats

from benchmark.hashing import DATASET_RUN_ONLY_KEYS, RUN_ONLY_KEYS
from benchmark.version import RESULTS_VERSION

log = logging.getLogger("benchmark")

# Columns of the tidy frame (short names for the MLflow columns a figure groups by).
MODEL, DATASET, THREAT, METHOD, TARGET, SEED = "model", "dataset", "threat", "method", "target", "seed"
# `target` is the requested sparsity; a method whose amount is its own key (threshold's rate, benchmark.pruning's
# `amount_key`) has none: its amount is in a column of its own and its target is empty.
RATE = "rate"
RUN_ID = "run_id"  # to read a run's logged curves (metric history)
VARIANT = "variant"  # other config keys on which cells of one point differ, e.g. "pruning.scope=layerwise"
PARAMS = {MODEL: "params.model.name", DATASET: "params.dataset.name", THREAT: "params.threat.name",
          METHOD: "params.pruning.method", TARGET: "params.pruning.sparsity", RATE: "params.pruning.rate",
          SEED: "params.seed"}
SETTING = [MODEL, DATASET, THREAT]  # one figure file per setting
POINT = [*SETTING, METHOD, VARIANT, TARGET, RATE]  # one plotted point (mean over seeds) per group
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


# ---------------------------------------------------------------------------------------------------- loading
def load_runs(tracking_uri: str, experiment: str) -> pd.DataFrame:
    """FINISHED cell runs of an experiment computed by this results version (grid parent runs dropped), as MLflow's
    frame. A run of an older results version was computed by code that a later fix changed (benchmark/version.py):
    it is left out, with a warning, rather than averaged with the re-run of the same cell."""
    mlflow.set_tracking_uri(tracking_uri)
    runs = mlflow.search_runs(experiment_names=[experiment], filter_string="attributes.status = 'FINISHED'",
                              output_format="pandas")
    if runs.empty:
        return runs
    if "tags.grid" in runs:
        runs = runs[runs["tags.grid"] != "true"]
    runs = runs[runs.get("tags.cell_hash", pd.Series(index=runs.index)).notna()]
    current = runs.get("tags.results_version", pd.Series(index=runs.index)) == str(RESULTS_VERSION)
    if stale := int((~current).sum()):
        log.warning("%d of %d FINISHED cell runs in %r were computed by an older results version than %d and are "
                    "left out: re-run their grid to include them", stale, len(runs), experiment, RESULTS_VERSION)
    return runs[current].reset_index(drop=True)


def tidy(runs: pd.DataFrame) -> pd.DataFrame:
    """Group keys with short names and typed values, plus every `metrics.*` column under its metric name.

    One row per seed of a point: a cell re-run with force=true has several FINISHED runs, and one config and seed
    computed on another device type or with other library versions (both in the cell hash, neither a param) is
    another run of the same seed, not another seed; the newest is kept, with a warning counting the others."""
    if runs.empty:
        return pd.DataFrame(columns=[*PARAMS, VARIANT, RUN_ID])
    runs = runs.sort_values("start_time").drop_duplicates("tags.cell_hash", keep="last")
    frame = pd.DataFrame({short: runs[col] for short, col in PARAMS.items() if col in runs})
    frame[RUN_ID] = runs["run_id"] if "run_id" in runs else ""
    frame[RATE] = frame[RATE].astype(float) if RATE in frame else np.nan
    frame[TARGET] = frame[TARGET].astype(float).where(frame[RATE].isna())  # a rate is not a target sparsity
    frame[SEED] = frame[SEED].astype(int)
    frame.insert(list(PARAMS).index(METHOD) + 1, VARIANT, variants(runs, frame))
    metrics = runs[[c for c in runs.columns if c.startswith("metrics.")]]
    frame = pd.concat([frame, metrics.rename(columns=lambda c: c[len("metrics."):])], axis=1)
    newest = ~frame.duplicated([*POINT, SEED], keep="last")  # rows are in start-time order
    if repeats := int((~newest).sum()):
        log.warning("%d FINISHED cell runs repeat a config and seed of a newer run (another device type or library "
                    "versions): only the newest run per seed is used, so seeds are never counted twice", repeats)
    return frame[newest].sort_values([*POINT, SEED]).reset_index(drop=True)


def variants(runs: pd.DataFrame, frame: pd.DataFrame) -> pd.Series:
    """Per run, "key=value, ..." over the params on which cells of one point (setting, method, target sparsity)
    differ: cells that differ in anything but the seed (e.g. pruning.scope, finetune.adversarial, train.epochs) are
    separate lines and rows, never averaged as if they were seeds. Keys are collected per (setting, method), so a
    line keeps one label across sparsities; a point's amount (target sparsity, or threshold's rate) is not a
    variant. Empty when every point has one configuration."""
    params = [c for c in runs.columns if c.startswith("params.") and c not in NOT_VARIANT]
    labels = pd.Series("", index=runs.index)
    for _, group in runs.groupby([frame[k] for k in (*SETTING, METHOD)], sort=False, dropna=False):
        points = group.groupby([frame.loc[group.index, k] for k in (TARGET, RATE)], dropna=False)
        varying = [c for c in params if (points[c].agg(lambda v: v.astype(str).nunique()) > 1).any()]
        for index, row in group[varying].astype(str).iterrows():
            labels[index] = ", ".join(f"{c[len('params.'):]}={v}" for c, v in row.items())
    return labels


def matching(frame: pd.DataFrame, pattern: str, exclude: tuple[str, ...] = ()) -> list[str]:
    """Metric columns matching a glob, in natural order (eps_0.05 < eps_0.1 < eps_0.2)."""
    names = [c for c in frame.columns if "/" in c and fnmatch.fnmatchcase(c, pattern)
             and not any(fnmatch.fnmatchcase(c, e) for e in exclude) and frame[c].notna().any()]
    return sorted(names, key=natural_key)


def natural_key(name: str):
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



def settings(frame: pd.DataFrame) -> list[tuple]:
    return sorted(frame[SETTING].drop_duplicates().itertuples(index=False, name=None))

