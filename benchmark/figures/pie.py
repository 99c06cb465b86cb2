"""What pruning makes a model forget, as Hooker et al. (2019) measure it, from the per-image test predictions each
cell logs (`benchmark.artifacts.PREDICTIONS_ARTIFACT`), across the seeds of one point.

A point (model, dataset, threat, method, variant, target sparsity) has two populations of models: the dense
parents of its cells and the pruned, fine-tuned models, one of each per seed. Both statistics need populations of
at least MIN_SEEDS seeds each (the paper uses 30): with fewer, modal predictions and t-tests are noise, so a point
with fewer seeds gets counts and no values, and the PIE figure says why.

- Pruning-identified exemplars (PIEs): an image counts when it is in the test split of at least two of the
  point's cells (the seeded splits differ) and has one label in all of them. Its modal prediction in a population
  is the class most of that population's models predict; when several classes tie, all of them are modal. The
  image is a PIE when no class is modal in both populations: the two modal predictions differ whichever way a tie
  is broken. The null (`pie/share_null`) is the same share between two populations of dense models, the point's
  dense parents split in two by seed: what seed-to-seed variation alone makes of "PIEs".
- Class-level impact: per model, each class's recall normalised by the model's overall accuracy; per class, the
  pruned population's mean minus the dense population's, and a two-tailed Welch t-test between the two
  populations (significant below SIGNIFICANCE): a class that pruning hurts more than the overall accuracy change
  explains.
"""
from __future__ import annotations

import contextlib
import logging
import os

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from scipy import stats

from benchmark.artifacts import PREDICTIONS_ARTIFACT
from benchmark.figures.frame import COLLAPSED, POINT, RUN_ID, SEED, X_SPARSITY

log = logging.getLogger("benchmark")

MIN_SEEDS = 5  # models per population (seeds of a point) before PIEs and class-level impact are computed
SIGNIFICANCE = 0.05  # Welch t-test level for a class-level impact
IMAGE, LABEL, DENSE_PRED, PRED = "image_id", "label", "dense_pred", "pred"
PIE_SHARE, PIE_NULL = "pie/share", "pie/share_null"
PIE_CAPTION = ("pruning-identified exemplars: test images whose modal prediction over the pruned models of a point's "
               f"seeds differs from the dense models' (points with at least {MIN_SEEDS} seeds); the null is the same "
               "share between the dense models split in two; accuracies over (image, seed) pairs")
CLASS_IMPACT_CAPTION = ("class-level impact: mean class recall normalised by overall accuracy, pruned minus dense "
                        f"population, two-tailed Welch t-test (points with at least {MIN_SEEDS} seeds)")
COLUMNS = [*POINT, "n_seeds", "n_seeds_without_predictions", X_SPARSITY, "images", "pie/count", PIE_SHARE, PIE_NULL,
           "dense/acc_pie", "dense/acc_rest", "pruned/acc_pie", "pruned/acc_rest"]
CLASS_COLUMNS = [*POINT, "n_seeds", X_SPARSITY, "class", "impact", "p_value", "significant"]


def load_predictions(tracking_uri: str, experiment: str, run_ids: list[str]) -> pd.DataFrame:
    """The prediction tables of the runs `run_ids` that logged one, stacked with a `run_id` column; runs without
    it (logged before the artifact existed) are simply absent."""
    empty = pd.DataFrame(columns=[IMAGE, LABEL, DENSE_PRED, PRED, RUN_ID])
    mlflow.set_tracking_uri(tracking_uri)  # load_table searches the runs through the global URI
    client = mlflow.MlflowClient()
    found = client.get_experiment_by_name(experiment)
    if found is None or not run_ids:
        return empty
    log.info("pie: reading the test predictions of %d cells", len(run_ids))
    with _quiet_downloads():
        try:
            return client.load_table(found.experiment_id, PREDICTIONS_ARTIFACT, run_ids, extra_columns=[RUN_ID])
        except MlflowException as err:  # RESOURCE_DOES_NOT_EXIST: no run has the table (a store from before it)
            if err.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
            return empty


@contextlib.contextmanager
def _quiet_downloads():
    """No download progress bar per run while the tables load."""
    previous = os.environ.get("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR")
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    try:
        yield
    finally:
        if previous is None:
            del os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"]
        else:
            os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = previous


def multi_seed_runs(frame: pd.DataFrame, min_seeds: int = 2) -> list[str]:
    """The run ids of the points with at least `min_seeds` seeds: the runs whose predictions the tables read (a
    point with two seeds is listed with its counts, even below MIN_SEEDS)."""
    seeds = frame.groupby(POINT, dropna=False)[SEED].transform("nunique")
    return sorted(frame.loc[seeds >= min_seeds, RUN_ID])


def forgetting_tables(frame: pd.DataFrame, tracking_uri: str, experiment: str,
                      include_collapsed: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    """`pie_table` and `class_impact_table` of the cells in `frame`, with the predictions of the points that have
    enough seeds read from the store once."""
    predictions = load_predictions(tracking_uri, experiment, multi_seed_runs(frame))
    return (pie_table(frame, predictions, include_collapsed),
            class_impact_table(frame, predictions, include_collapsed))


def _points(frame: pd.DataFrame, include_collapsed: bool):
    """(point key, its cells) for every point with at least two seeds, collapsed points left out unless asked."""
    for key, cells in frame.groupby(POINT, sort=True, dropna=False):
        if cells[SEED].nunique() < 2:
            continue
        if not include_collapsed and COLLAPSED in cells and (cells[COLLAPSED] == 1).any():
            continue
        yield key, cells


def pie_table(frame: pd.DataFrame, predictions: pd.DataFrame, include_collapsed: bool = False,
              min_seeds: int = MIN_SEEDS) -> pd.DataFrame:
    """One row per point with at least two seeds: the seeds whose cells logged predictions (`n_seeds`) and those
    that did not (`n_seeds_without_predictions`: cells logged before the artifact existed, left out), the images
    considered, the PIEs among them (count and share), the null share between two dense populations, and the dense
    and the pruned accuracy on the PIEs and on the other images, each over every (image, seed) pair. A point with
    fewer than `min_seeds` seeds with predictions has counts and no values. Points where a seed's model collapsed
    to chance are left out unless `include_collapsed`, as in the trend tables."""
    rows = []
    for key, cells in _points(frame, include_collapsed):
        mine = predictions[predictions[RUN_ID].isin(list(cells[RUN_ID]))]
        with_predictions = mine[RUN_ID].nunique()
        row = {**dict(zip(POINT, key)), "n_seeds": with_predictions,
               "n_seeds_without_predictions": len(cells) - with_predictions,
               X_SPARSITY: float(cells[X_SPARSITY].mean()) if X_SPARSITY in cells else np.nan}
        if with_predictions >= min_seeds:
            row.update(_exemplars(mine))
        rows.append(row)
    if any(r["n_seeds_without_predictions"] for r in rows):
        log.info("pie table: %d cells logged no test predictions (older runs) and are left out",
                 sum(r["n_seeds_without_predictions"] for r in rows))
    counts = {"n_seeds": int, "n_seeds_without_predictions": int, "images": "Int64", "pie/count": "Int64"}
    return pd.DataFrame(rows, columns=COLUMNS).astype(counts)  # Int64: empty, not NaN, where nothing was counted


def _exemplars(predictions: pd.DataFrame) -> dict[str, float]:
    """PIE counts and accuracies of one point from its cells' prediction tables (one per run)."""
    seen = predictions.drop_duplicates([RUN_ID, IMAGE])  # identical images in one split: one image
    per_image = seen.groupby(IMAGE).agg(runs=(RUN_ID, "nunique"), labels=(LABEL, "nunique"))
    considered = per_image.index[(per_image["runs"] >= 2) & (per_image["labels"] == 1)]
    seen = seen[seen[IMAGE].isin(considered)]
    shared = _shared_modal(seen, DENSE_PRED, seen, PRED)
    is_pie = ~seen[IMAGE].isin(shared)
    pies = seen.loc[is_pie, IMAGE].nunique()
    accuracy = lambda column, rows: float((seen.loc[rows, column] == seen.loc[rows, LABEL]).mean())  # noqa: E731
    return {"images": len(considered), "pie/count": pies,
            PIE_SHARE: pies / len(considered) if len(considered) else np.nan, PIE_NULL: _null_share(seen),
            "dense/acc_pie": accuracy(DENSE_PRED, is_pie), "dense/acc_rest": accuracy(DENSE_PRED, ~is_pie),
            "pruned/acc_pie": accuracy(PRED, is_pie), "pruned/acc_rest": accuracy(PRED, ~is_pie)}


def _null_share(seen: pd.DataFrame) -> float:
    """The share of "PIEs" between two dense populations: the point's dense parents split in two by seed (every
    other run), over the images both halves saw."""
    runs = sorted(seen[RUN_ID].unique())
    first = seen[RUN_ID].isin(runs[::2])
    images = set(seen.loc[first, IMAGE]) & set(seen.loc[~first, IMAGE])
    if not images:
        return np.nan
    a, b = (part[part[IMAGE].isin(images)] for part in (seen[first], seen[~first]))
    return (len(images) - len(_shared_modal(a, DENSE_PRED, b, DENSE_PRED))) / len(images)


def _shared_modal(a: pd.DataFrame, column_a: str, b: pd.DataFrame, column_b: str) -> np.ndarray:
    """The images with a class modal both in population `a`'s `column_a` and in population `b`'s `column_b`."""
    left = _modal(a, column_a).rename(columns={column_a: "modal"})
    right = _modal(b, column_b).rename(columns={column_b: "modal"})
    return left.merge(right, on=[IMAGE, "modal"])[IMAGE].unique()


def class_impact_table(frame: pd.DataFrame, predictions: pd.DataFrame, include_collapsed: bool = False,
                       min_seeds: int = MIN_SEEDS) -> pd.DataFrame:
    """One row per (point with at least `min_seeds` seeds with predictions, class): the class-level impact
    (Hooker et al.): mean class recall normalised by overall accuracy over the pruned models minus the same over
    their dense parents, the two-tailed Welch t-test's p-value between the two populations and whether it is below
    SIGNIFICANCE."""
    rows = []
    for key, cells in _points(frame, include_collapsed):
        mine = predictions[predictions[RUN_ID].isin(list(cells[RUN_ID]))]
        if mine[RUN_ID].nunique() < min_seeds:
            continue
        sparsity = float(cells[X_SPARSITY].mean()) if X_SPARSITY in cells else np.nan
        dense, pruned = _normalised_recall(mine, DENSE_PRED), _normalised_recall(mine, PRED)
        for label in sorted(set(dense.columns) & set(pruned.columns)):
            a, b = pruned[label].dropna(), dense[label].dropna()
            p_value = float(stats.ttest_ind(a, b, equal_var=False).pvalue) if len(a) > 1 and len(b) > 1 else np.nan
            rows.append({**dict(zip(POINT, key)), "n_seeds": int(min(len(a), len(b))), X_SPARSITY: sparsity,
                         "class": int(label), "impact": float(a.mean() - b.mean()), "p_value": p_value,
                         "significant": bool(p_value < SIGNIFICANCE)})
    return pd.DataFrame(rows, columns=CLASS_COLUMNS)


def _normalised_recall(predictions: pd.DataFrame, column: str) -> pd.DataFrame:
    """Run x class: each model's recall on the class over its own test split, divided by its overall accuracy."""
    seen = predictions.drop_duplicates([RUN_ID, IMAGE])
    correct = seen[column] == seen[LABEL]
    recall = correct.groupby([seen[RUN_ID], seen[LABEL]]).mean().unstack(LABEL)
    accuracy = correct.groupby(seen[RUN_ID]).mean()
    return recall.div(accuracy.replace(0.0, np.nan), axis=0)


def _modal(predictions: pd.DataFrame, column: str) -> pd.DataFrame:
    """(image, class) for every class that is modal among the image's predictions in `column` (ties: all)."""
    votes = predictions.groupby([IMAGE, column]).size()
    modal = votes[votes == votes.groupby(level=IMAGE).transform("max")]
    return modal.reset_index()[[IMAGE, column]]
