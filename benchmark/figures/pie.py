"""Pruning-identified exemplars (PIEs, Hooker et al. 2019) from the per-image test predictions each cell logs
(`benchmark.artifacts.PREDICTIONS_ARTIFACT`), across the seeds of one point.

A point (model, dataset, threat, method, variant, target sparsity) with at least two seeds has two populations of
models: the dense parents of its cells and the pruned, fine-tuned models. An image counts when it is in the test
split of at least MIN_SEEDS of the point's cells (the seeded splits differ) and has one label in all of them. Its
modal prediction in a population is the class most of that population's models predict; when several classes tie,
all of them are modal. The image is a PIE when no class is modal in both populations: the two modal predictions
differ whichever way a tie is broken.
"""
from __future__ import annotations

import contextlib
import logging
import os

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException

from benchmark.artifacts import PREDICTIONS_ARTIFACT
from benchmark.figures.frame import COLLAPSED, POINT, RUN_ID, SEED, X_SPARSITY

log = logging.getLogger("benchmark")

MIN_SEEDS = 2  # an image must be in the test split of this many of a point's cells, and a point have this many
IMAGE, LABEL, DENSE_PRED, PRED = "image_id", "label", "dense_pred", "pred"
PIE_SHARE = "pie/share"
PIE_CAPTION = ("pruning-identified exemplars: test images whose modal prediction over the pruned models of a point's "
               "seeds differs from the dense models'; accuracies over (image, seed) pairs")
COLUMNS = [*POINT, "n_seeds", "n_seeds_without_predictions", X_SPARSITY, "images", "pie/count", PIE_SHARE,
           "dense/acc_pie", "dense/acc_rest", "pruned/acc_pie", "pruned/acc_rest"]


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


def multi_seed_runs(frame: pd.DataFrame) -> list[str]:
    """The run ids of the points with at least MIN_SEEDS seeds: the only runs whose predictions a PIE needs."""
    seeds = frame.groupby(POINT, dropna=False)[SEED].transform("nunique")
    return sorted(frame.loc[seeds >= MIN_SEEDS, RUN_ID])


def exemplar_table(frame: pd.DataFrame, tracking_uri: str, experiment: str,
                   include_collapsed: bool = False) -> pd.DataFrame:
    """`pie_table` of the cells in `frame`, with the predictions of its multi-seed points read from the store."""
    return pie_table(frame, load_predictions(tracking_uri, experiment, multi_seed_runs(frame)), include_collapsed)


def pie_table(frame: pd.DataFrame, predictions: pd.DataFrame, include_collapsed: bool = False) -> pd.DataFrame:
    """One row per point with at least MIN_SEEDS seeds: the seeds whose cells logged predictions (`n_seeds`) and
    those that did not (`n_seeds_without_predictions`: cells logged before the artifact existed, left out), the
    images considered, the PIEs among them (count and share), and the dense and the pruned accuracy on the PIEs and
    on the other images, each over every (image, seed) pair. A point with fewer than MIN_SEEDS seeds with
    predictions has counts and no values. Points where a seed's model collapsed to chance are left out unless
    `include_collapsed`, as in the trend tables."""
    rows = []
    for key, cells in frame.groupby(POINT, sort=True, dropna=False):
        if cells[SEED].nunique() < MIN_SEEDS:
            continue
        if not include_collapsed and COLLAPSED in cells and (cells[COLLAPSED] == 1).any():
            continue
        mine = predictions[predictions[RUN_ID].isin(list(cells[RUN_ID]))]
        with_predictions = mine[RUN_ID].nunique()
        row = {**dict(zip(POINT, key)), "n_seeds": with_predictions,
               "n_seeds_without_predictions": len(cells) - with_predictions,
               X_SPARSITY: float(cells[X_SPARSITY].mean()) if X_SPARSITY in cells else np.nan}
        if with_predictions >= MIN_SEEDS:
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
    considered = per_image.index[(per_image["runs"] >= MIN_SEEDS) & (per_image["labels"] == 1)]
    seen = seen[seen[IMAGE].isin(considered)]
    shared = _modal(seen, DENSE_PRED).merge(_modal(seen, PRED), left_on=[IMAGE, DENSE_PRED],
                                            right_on=[IMAGE, PRED])[IMAGE].unique()
    is_pie = ~seen[IMAGE].isin(shared)
    pies = seen.loc[is_pie, IMAGE].nunique()
    accuracy = lambda column, rows: float((seen.loc[rows, column] == seen.loc[rows, LABEL]).mean())  # noqa: E731
    return {"images": len(considered), "pie/count": pies,
            PIE_SHARE: pies / len(considered) if len(considered) else np.nan,
            "dense/acc_pie": accuracy(DENSE_PRED, is_pie), "dense/acc_rest": accuracy(DENSE_PRED, ~is_pie),
            "pruned/acc_pie": accuracy(PRED, is_pie), "pruned/acc_rest": accuracy(PRED, ~is_pie)}


def _modal(predictions: pd.DataFrame, column: str) -> pd.DataFrame:
    """(image, class) for every class that is modal among the image's predictions in `column` (ties: all)."""
    votes = predictions.groupby([IMAGE, column]).size()
    modal = votes[votes == votes.groupby(level=IMAGE).transform("max")]
    return modal.reset_index()[[IMAGE, column]]
