"""Pruning-identified exemplars: a known answer on hand-made predictions (ties, images in one seed only, identical
images, conflicting labels, cells without predictions), and the per-image predictions a real cell logs."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from benchmark import figures
from benchmark.figures.pie import pie_table
from benchmark.version import RESULTS_VERSION
from conftest import make_cfg

SETTING = {"params.model.name": "seed_cnn", "params.dataset.name": "digits", "params.threat.name": "pgd"}


def _frame(cells: list[tuple]) -> pd.DataFrame:
    """A tidy frame from (run id, method, target, seed, collapsed) cells."""
    return figures.tidy(pd.DataFrame([
        {"tags.cell_hash": run, "start_time": i, "run_id": run, **SETTING, "params.pruning.method": method,
         "params.pruning.sparsity": str(target), "params.seed": str(seed), "metrics.sparsity/achieved": target,
         "metrics.clean/collapsed": float(collapsed)}
        for i, (run, method, target, seed, collapsed) in enumerate(cells)]))


def _predictions(rows: list[tuple]) -> pd.DataFrame:
    """(run id, image id, label, dense prediction, pruned prediction) rows, as pie.load_predictions returns them."""
    return pd.DataFrame(rows, columns=["run_id", "image_id", "label", "dense_pred", "pred"])


# magnitude_global at 0.5 over seeds 0, 1, 2 (runs r0, r1, r2). Per image: label, then (dense, pruned) per run.
#   a  r0 r1 r2  label 1  dense 1 1 1  pruned 2 2 1  -> modal {1} vs {2}: PIE
#   b  r0 r1 r2  label 3  dense 3 3 3  pruned 3 3 4  -> {3} vs {3}: not a PIE
#   c  r0 r1     label 5  dense 5 6    pruned 7 7    -> tie {5, 6} vs {7}: no class modal in both: PIE
#   d  r0 r1     label 6  dense 5 6    pruned 6 8    -> tie {5, 6} vs tie {6, 8}: 6 modal in both: not a PIE
#   f  r1 r2     label 2  dense 2 2    pruned 2 2    -> not a PIE
#   h  r0 r0 r1  label 1  dense 1 1 2  pruned 2 2 1  -> twice in r0's split (identical images): one vote per run,
#                                                       so ties {1, 2} vs {2, 1}: not a PIE (two votes would make one)
#   e  r2        label 0  dense 0      pruned 9      -> one seed only: left out
#   g  r0 r2     labels 0 and 1                      -> one image with two labels: left out
KNOWN = _predictions([
    ("r0", "a", 1, 1, 2), ("r1", "a", 1, 1, 2), ("r2", "a", 1, 1, 1),
    ("r0", "b", 3, 3, 3), ("r1", "b", 3, 3, 3), ("r2", "b", 3, 3, 4),
    ("r0", "c", 5, 5, 7), ("r1", "c", 5, 6, 7),
    ("r0", "d", 6, 5, 6), ("r1", "d", 6, 6, 8),
    ("r1", "f", 2, 2, 2), ("r2", "f", 2, 2, 2),
    ("r0", "h", 1, 1, 2), ("r0", "h", 1, 1, 2), ("r1", "h", 1, 2, 1),
    ("r2", "e", 0, 0, 9),
    ("r0", "g", 0, 0, 1), ("r2", "g", 1, 0, 1),
    ("r4", "a", 1, 1, 0),  # l1_filter seed 0; its seed 1 (r5) logged no predictions
    ("r7", "a", 1, 1, 0), ("r8", "a", 1, 1, 0),  # a collapsed point
])
CELLS = [("r0", "magnitude_global", 0.5, 0, False), ("r1", "magnitude_global", 0.5, 1, False),
         ("r2", "magnitude_global", 0.5, 2, False),
         ("r3", "magnitude_global", 0.9, 0, False),  # one seed: no row
         ("r4", "l1_filter", 0.5, 0, False), ("r5", "l1_filter", 0.5, 1, False),
         ("r7", "random", 0.9, 0, True), ("r8", "random", 0.9, 1, False)]


def test_pies_are_images_whose_modal_predictions_share_no_class_known_answer():
    table = pie_table(_frame(CELLS), KNOWN, min_seeds=2)
    assert list(zip(table["method"], table["target"])) == [("l1_filter", 0.5), ("magnitude_global", 0.5)]
    row = table.set_index("method").loc["magnitude_global"]
    assert (row["n_seeds"], row["n_seeds_without_predictions"]) == (3, 0)
    assert (row["images"], row["pie/count"]) == (6, 2)  # a, b, c, d, f, h considered; a and c are PIEs
    assert row["pie/share"] == pytest.approx(2 / 6)
    # accuracies over (image, seed) pairs: PIEs a (3 pairs) and c (2); the rest b (3), d, f, h (2 each)
    assert row["dense/acc_pie"] == pytest.approx(4 / 5) and row["pruned/acc_pie"] == pytest.approx(1 / 5)
    assert row["dense/acc_rest"] == pytest.approx(7 / 9) and row["pruned/acc_rest"] == pytest.approx(6 / 9)
    # the null: dense parents r0, r2 vs r1 over the images both halves saw (a, b, c, d, f, h): c, d and h differ
    assert row["pie/share_null"] == pytest.approx(3 / 6)


def test_cells_without_predictions_are_counted_and_leave_no_values():
    table = pie_table(_frame(CELLS), KNOWN, min_seeds=2).set_index("method")
    l1 = table.loc["l1_filter"]
    assert (l1["n_seeds"], l1["n_seeds_without_predictions"]) == (1, 1)
    assert l1["images"] is pd.NA and np.isnan(l1["pie/share"])
    older = pie_table(_frame(CELLS), _predictions([]), min_seeds=2)  # a store from before the artifact: counts, no crash
    assert list(older["n_seeds_without_predictions"]) == [2, 3] and older["pie/share"].isna().all()
    markdown = figures.to_markdown(older)
    assert "<NA>" not in markdown and "nan" not in markdown


def test_collapsed_points_are_left_out_unless_asked_for():
    with_collapsed = pie_table(_frame(CELLS), KNOWN, include_collapsed=True, min_seeds=2).set_index("method")
    random = with_collapsed.loc["random"]
    assert (random["images"], random["pie/count"]) == (1, 1)  # a: dense {1}, pruned {0}
    assert "random" not in set(pie_table(_frame(CELLS), KNOWN, min_seeds=2)["method"])


def test_pie_table_and_figure_files(tmp_path):
    table = pie_table(_frame(CELLS), KNOWN, min_seeds=2)
    tables = figures.write_table(table, tmp_path / "tables", "pie", "caption")
    assert [p.name for p in tables] == ["pie.csv", "pie.md", "pie.tex"]
    assert pd.read_csv(tables[0])["pie/count"].tolist()[1] == 2
    drawn = figures.write_pie_figures(table, tmp_path / "figures")
    assert sorted(p.name for p in drawn) == ["pie_share_vs_sparsity__seed_cnn__digits__pgd.pdf",
                                             "pie_share_vs_sparsity__seed_cnn__digits__pgd.png"]
    assert figures.write_pie_figures(pie_table(_frame(CELLS), _predictions([]), min_seeds=2), tmp_path / "none") == []


def test_a_cell_logs_one_prediction_row_per_test_image_with_ids_shared_across_seeds(store):
    from benchmark.data import load_dataset

    frame = figures.tidy(figures.load_runs(store.uri, store.experiment))
    point = frame[(frame["method"] == "magnitude_global") & (frame["target"] == 0.5)].set_index("seed")
    predictions = figures.load_predictions(store.uri, store.experiment, list(point["run_id"]))
    tests = {}
    for seed in (0, 1):
        cell = point.loc[seed]
        logged = predictions[predictions["run_id"] == cell["run_id"]]
        data = load_dataset(make_cfg("unused", f"seed={seed}").dataset, seed)
        assert len(logged) == len(data.y_test)
        assert logged["label"].tolist() == data.y_test.tolist()  # in test-split order
        # the logged predictions are the ones the cell's metrics (float32 shares: within half an image) came from
        one_image = 0.5 / len(logged)
        assert (logged["pred"] == logged["label"]).mean() == pytest.approx(cell["clean/acc"], abs=one_image)
        assert (logged["dense_pred"] == logged["label"]).mean() == pytest.approx(cell["dense/acc"], abs=one_image)
        assert (logged["pred"] != logged["dense_pred"]).mean() == pytest.approx(cell["forget/flip_rate"],
                                                                               abs=one_image)
        tests[seed] = (logged["image_id"].tolist(), data)
    (ids0, data0), (ids1, data1) = tests[0], tests[1]
    pixels = lambda data: {tuple(x.flatten().tolist()): i for i, x in enumerate(data.x_test)}  # noqa: E731
    shared_images = pixels(data0).keys() & pixels(data1).keys()
    shared_ids = set(ids0) & set(ids1)
    assert 0 < len(shared_ids) == len(shared_images) < len(ids0)  # the seeds' test splits overlap in part
    for image_id in shared_ids:  # one id, one image: the same pixels and label in both splits
        i, j = ids0.index(image_id), ids1.index(image_id)
        assert torch.equal(data0.x_test[i], data1.x_test[j]) and data0.y_test[i] == data1.y_test[j]
    pies = figures.pie_table(frame, figures.load_predictions(store.uri, store.experiment,
                                                             figures.multi_seed_runs(frame)),
                             min_seeds=2)
    assert len(pies) == 4 and (pies["n_seeds"] == 2).all() and (pies["n_seeds_without_predictions"] == 0).all()
    assert (pies["images"] == len(shared_ids)).all()  # every point has the same two seeds' splits


def test_a_store_whose_cells_predate_the_predictions_artifact_gives_counts(tmp_path):
    import mlflow

    from benchmark.artifacts import PREDICTIONS_ARTIFACT

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    experiment = client.create_experiment("old", artifact_location=(tmp_path / "artifacts").as_uri())
    for method, seed in (("l1_filter", 0), ("l1_filter", 1), ("magnitude_global", 0), ("magnitude_global", 1)):
        run = client.create_run(experiment, tags={"cell_hash": f"{method}{seed}",
                                                  "results_version": str(RESULTS_VERSION)})
        for key, value in {**{k[len("params."):]: v for k, v in SETTING.items()}, "pruning.method": method,
                           "pruning.sparsity": "0.5", "seed": str(seed)}.items():
            client.log_param(run.info.run_id, key, value)
        client.log_metric(run.info.run_id, "sparsity/achieved", 0.5)
        if (method, seed) == ("magnitude_global", 0):  # the one cell logged after the artifact existed
            client.log_table(run.info.run_id, _predictions([("", "a", 1, 1, 1)]).drop(columns="run_id"),
                             PREDICTIONS_ARTIFACT)
        client.set_terminated(run.info.run_id)
    frame = figures.tidy(figures.load_runs(uri, "old"))
    l1_runs = list(frame.loc[frame["method"] == "l1_filter", "run_id"])
    mlflow.set_tracking_uri(tmp_path.as_uri())  # elsewhere: the predictions are read from `uri` all the same
    assert figures.load_predictions(uri, "old", l1_runs).empty  # no run has the table
    mlflow.set_tracking_uri(tmp_path.as_uri())
    predictions = figures.load_predictions(uri, "old", figures.multi_seed_runs(frame))
    assert len(predictions) == 1
    table = figures.pie_table(frame, predictions, min_seeds=2)
    assert list(zip(table["method"], table["n_seeds"], table["n_seeds_without_predictions"])) == [
        ("l1_filter", 0, 2), ("magnitude_global", 1, 1)]
    assert table["pie/share"].isna().all()


def test_forgetting_needs_populations_of_five_seeds_and_the_figure_says_why(tmp_path, monkeypatch):
    """Hooker et al.'s statistics compare populations of models: three seeds give counts, no values."""
    from benchmark.figures import plot
    from benchmark.figures.pie import MIN_SEEDS

    assert MIN_SEEDS >= 5
    table = pie_table(_frame(CELLS), KNOWN)
    row = table.set_index("method").loc["magnitude_global"]
    assert row["n_seeds"] == 3 and np.isnan(row["pie/share"]) and np.isnan(row["pie/share_null"])
    assert figures.class_impact_table(_frame(CELLS), KNOWN).empty
    texts = []
    save = plot._save
    monkeypatch.setattr(plot, "_save", lambda fig, *args: (texts.extend(t.get_text() for ax in fig.axes
                                                                         for t in ax.texts), save(fig, *args))[1])
    assert figures.write_pie_figures(table, tmp_path)  # a figure that says why, not a silent absence
    assert any(f"at least {MIN_SEEDS} seeds" in text and "at most 3" in text for text in texts)


def _five_seeds():
    """Five seeds of one point; ten test images each, five of class 0 and five of class 1. Dense run k misses
    k % 2 class-1 images; pruned run k misses 2 + k % 2 class-0 images and nothing else."""
    cells = [(f"r{k}", "magnitude_global", 0.5, k, False) for k in range(5)]
    rows = []
    for k in range(5):
        for i in range(10):
            label = i // 5
            dense = 1 - label if (label == 1 and i - 5 < k % 2) else label
            pruned = 1 - label if (label == 0 and i < 2 + k % 2) else label
            rows.append((f"r{k}", f"img{i}", label, dense, pruned))
    return _frame(cells), _predictions(rows)


def test_class_level_impact_is_normalised_recall_with_a_welch_test_known_answer():
    from scipy import stats

    frame, predictions = _five_seeds()
    table = figures.class_impact_table(frame, predictions).set_index("class")
    dense_acc = [1 - (k % 2) / 10 for k in range(5)]
    pruned_acc = [1 - (2 + k % 2) / 10 for k in range(5)]
    dense0 = [1.0 / a for a in dense_acc]
    pruned0 = [(1 - (2 + k % 2) / 5) / a for k, a in enumerate(pruned_acc)]
    assert table.loc[0, "impact"] == pytest.approx(np.mean(pruned0) - np.mean(dense0))
    assert table.loc[0, "p_value"] == pytest.approx(stats.ttest_ind(pruned0, dense0, equal_var=False).pvalue)
    assert table.loc[0, "impact"] < 0 and bool(table.loc[0, "significant"])
    assert table.loc[1, "impact"] > 0  # class 1 lost nothing: above the overall change once normalised
    assert (table["n_seeds"] == 5).all()
