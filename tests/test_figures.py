"""Figures and tables are pure functions of the tracking store: known answers for the statistics, identical
bytes on regeneration, `make figures` restores deleted files, one-line specs, and the notebook executes."""
from __future__ import annotations

import os
import subprocess

import matplotlib.pyplot as plt
import nbformat
import numpy as np
import pandas as pd
import pytest
from nbclient import NotebookClient

import tiny_store
from benchmark import figures
from benchmark.figures.frame import INEFFECTIVE_NOTE


@pytest.fixture(scope="module")
def frame(store):
    return figures.tidy(figures.load_runs(store.uri, store.experiment))


def expected_figure_files(frame) -> set[str]:
    """One png + pdf per spec whose metrics this store has (other areas' specs, e.g. backdoor ASR, are skipped), and
    the PIE share figure (the store has two seeds per point: a figure that says why it draws no curve)."""
    present = [spec for spec in figures.FIGURES
               if figures.matching(frame, spec.metrics, spec.exclude) and spec.x in frame]
    assert {"robust_vs_sparsity", "clean_vs_sparsity", "pareto_macs_vs_worst_robust"} <= {s.name for s in present}
    profiles = [spec for spec in figures.PROFILES
                if ((spec.metrics in frame) if spec.history else figures.matching(frame, spec.metrics))]
    assert {"worst_robust_vs_eps", "finetune_loss_vs_epoch"} <= {s.name for s in profiles}
    names = [spec.name for spec in [*present, *profiles]] + ["pie_share_vs_sparsity"]
    return {f"{name}__seed_cnn__digits__evasion.{ext}" for name in names for ext in ("png", "pdf")}


def test_ci_halfwidth_and_pareto_front_known_answers():
    assert figures.ci_halfwidth(pd.Series([1.0, 2.0, 3.0])) == pytest.approx(4.302653 / np.sqrt(3), rel=1e-6)
    assert figures.ci_halfwidth(pd.Series([0.7])) == 0.0  # one seed: no interval
    points = pd.DataFrame({"cost": [1, 2, 2, 3, 4], "acc": [0.5, 0.4, 0.6, 0.6, 0.9]})
    front = figures.pareto_front(points, "cost", "acc")
    assert list(zip(front["cost"], front["acc"])) == [(1, 0.5), (2, 0.6), (4, 0.9)]


def test_summary_is_mean_and_t_interval_over_seeds(frame):
    assert len(frame) == tiny_store.N_CELLS and set(frame["seed"]) == {0, 1}
    assert (frame["variant"] == "").all()  # the grid sweeps only method, sparsity and seed
    summary = figures.summary_table(frame)
    assert list(zip(summary["method"], summary["target"])) == [
        ("l1_filter", 0.5), ("l1_filter", 0.9), ("magnitude_global", 0.5), ("magnitude_global", 0.9)]
    assert (summary["n_seeds"] == 2).all()
    for _, row in summary.iterrows():
        seeds = frame[(frame["method"] == row["method"]) & (frame["target"] == row["target"])]["clean/acc"]
        assert row["clean/acc"] == pytest.approx(seeds.mean())
        assert row["clean/acc ci95"] == pytest.approx(12.706205 * seeds.std(ddof=1) / np.sqrt(2), rel=1e-6)
    magnitude = summary[summary["method"] == "magnitude_global"]
    assert np.allclose(magnitude["sparsity/achieved"], magnitude["target"], atol=1e-3)  # the x-axis is achieved
    assert "sparsity/achieved ci95" not in summary and "robust/worst/eps_0.3 ci95" in summary


def test_cells_differing_in_more_than_the_seed_are_separate_variants_never_averaged():
    def run(i, scope, seed, acc, method="magnitude_global"):
        return {"tags.cell_hash": f"h{i}", "start_time": i, "params.model.name": "seed_cnn",
                "params.dataset.name": "digits", "params.threat.name": "pgd", "params.pruning.method": method,
                "params.pruning.sparsity": "0.5", "params.seed": str(seed), "params.pruning.scope": scope,
                "params.device": f"cuda:{i}", "params.pruning.rate": "0.5", "metrics.clean/acc": acc}
    def threshold(i, rate):  # its rate follows the swept target: not a variant
        return {**run(i, None, 0, 0.1, method="threshold"), "params.pruning.sparsity": rate, "params.pruning.rate": rate}
    runs = pd.DataFrame([run(0, "global", 0, 0.9), run(1, "global", 1, 0.8), run(2, "layerwise", 0, 0.5),
                         run(3, None, 0, 0.7, method="l1_filter"), threshold(4, "0.5"), threshold(5, "0.9")])
    frame = figures.tidy(runs)
    assert sorted(zip(frame["method"], frame["variant"], frame["seed"])) == [
        ("l1_filter", "", 0),  # alone in its group: no variant (its missing scope is not a difference)
        ("magnitude_global", "pruning.scope=global", 0), ("magnitude_global", "pruning.scope=global", 1),
        ("magnitude_global", "pruning.scope=layerwise", 0),  # params.device differs too, but is run-only
        ("threshold", "", 0), ("threshold", "", 0)]
    summary = figures.summary_table(frame)
    seeds = {(r.method, r.variant): r.n_seeds for r in summary.itertuples()}
    assert seeds[("magnitude_global", "pruning.scope=global")] == 2
    assert seeds[("magnitude_global", "pruning.scope=layerwise")] == 1
    assert summary.loc[summary["variant"] == "pruning.scope=layerwise", "clean/acc"].item() == pytest.approx(0.5)


def test_thresholds_rate_is_its_own_column_never_a_target_sparsity_and_never_splits_its_line():
    """threshold's amount is a rate, not a sparsity: its points have an empty target and a `rate`; rates set with
    the sparsity normalised to 0 (or, in older runs, equal to it) are points of one line, never variants; the
    x-axis is the achieved sparsity, and a profile labels each line `rate=`."""
    def run(i, method, sparsity, rate, achieved, seed=0):
        return {"tags.cell_hash": f"h{i}", "start_time": i, "run_id": f"r{i}", "params.model.name": "seed_cnn",
                "params.dataset.name": "digits", "params.threat.name": "pgd", "params.pruning.method": method,
                "params.pruning.sparsity": sparsity, "params.pruning.rate": rate, "params.seed": str(seed),
                "metrics.sparsity/achieved": achieved, "metrics.clean/acc": 0.9 - achieved / 2,
                "metrics.robust/worst/eps_0.1": 0.5, "metrics.robust/worst/eps_0.2": 0.2}

    frame = figures.tidy(pd.DataFrame([
        run(0, "magnitude_global", "0.5", None, 0.5), run(1, "threshold", "0", "0.3", 0.2),
        run(2, "threshold", "0", "0.7", 0.6), run(3, "threshold", "0", "0.7", 0.62, seed=1),
        run(4, "threshold", "0.9", "0.9", 0.8)]))  # a run whose sparsity followed its rate
    assert (frame["variant"] == "").all()
    summary = figures.summary_table(frame).set_index("method")
    threshold = summary.loc["threshold"]
    assert threshold["target"].isna().all() and list(threshold["rate"]) == [0.3, 0.7, 0.9]
    assert list(threshold["n_seeds"]) == [1, 2, 1]
    assert list(threshold["sparsity/achieved"]) == pytest.approx([0.2, 0.61, 0.8])
    assert summary.loc["magnitude_global", "target"] == 0.5 and np.isnan(summary.loc["magnitude_global", "rate"])
    markdown = figures.to_markdown(figures.summary_table(frame))
    header = [c.strip() for c in markdown.splitlines()[0].strip("|").split("|")]
    row = [c.strip() for c in next(r for r in markdown.splitlines() if "| threshold |" in r).strip("|").split("|")]
    assert row[header.index("target")] == "" and row[header.index("rate")] == "0.300"
    spec = next(s for s in figures.FIGURES if s.name == "clean_vs_sparsity")
    fig = figures.plot_spec(frame, spec, ("seed_cnn", "digits", "pgd"))
    line = next(c for c in fig.axes[0].containers if c.get_label() == "threshold")
    assert list(line.lines[0].get_xdata()) == pytest.approx([0.2, 0.61, 0.8])  # one line, at achieved sparsity
    plt.close(fig)
    profile = next(s for s in figures.PROFILES if s.name == "worst_robust_vs_eps")
    fig = figures.plot_profile(figures.profile_points(frame, profile), profile, ("seed_cnn", "digits", "pgd"))
    labels = {t.get_label() for ax in fig.axes for t in ax.containers}
    assert {"rate=0.3", "rate=0.7", "rate=0.9", "s=0.5"} <= labels and "s=0" not in labels
    plt.close(fig)


def test_one_config_and_seed_on_another_device_or_library_is_not_another_seed(caplog):
    """Device type and library versions are in the cell hash, not the params: two such runs of one seed are the
    same seed, and the point's interval counts seeds, not rows."""
    def run(i, seed, acc):
        return {"tags.cell_hash": f"h{i}", "start_time": i, "params.model.name": "seed_cnn",
                "params.dataset.name": "digits", "params.threat.name": "pgd", "params.pruning.method": "random",
                "params.pruning.sparsity": "0.5", "params.seed": str(seed), "metrics.clean/acc": acc}

    with caplog.at_level("WARNING", logger="benchmark"):
        frame = figures.tidy(pd.DataFrame([run(0, 0, 0.2), run(1, 1, 0.6), run(2, 0, 0.4)]))
    assert sorted(zip(frame["seed"], frame["clean/acc"])) == [(0, 0.4), (1, 0.6)]  # seed 0: the newest run
    assert "1 FINISHED cell runs repeat a config and seed of a newer run" in caplog.text
    summary = figures.summary_table(frame)
    assert summary["n_seeds"].item() == 2 and summary["clean/acc"].item() == pytest.approx(0.5)
    assert summary["clean/acc ci95"].item() == pytest.approx(figures.ci_halfwidth(pd.Series([0.4, 0.6])))


def test_runs_of_an_older_results_version_are_left_out_not_averaged_with_their_rerun(tmp_path, caplog):
    """After a RESULTS_VERSION bump a grid re-runs every cell under a new hash; the old runs stay in the store."""
    from mlflow import MlflowClient

    from benchmark.version import RESULTS_VERSION

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("bumped", artifact_location=(tmp_path / "artifacts").as_uri())
    for version, acc in ((RESULTS_VERSION - 1, 0.2), (RESULTS_VERSION, 0.9), (None, 0.1)):
        tags = {"cell_hash": f"h{version}", **({} if version is None else {"results_version": str(version)})}
        run = client.create_run(experiment, tags=tags)
        for key, value in {"model.name": "seed_cnn", "dataset.name": "digits", "threat.name": "pgd",
                           "pruning.method": "magnitude_global", "pruning.sparsity": "0.5", "seed": "0"}.items():
            client.log_param(run.info.run_id, key, value)
        client.log_metric(run.info.run_id, "clean/acc", acc)
        client.set_terminated(run.info.run_id)
    with caplog.at_level("WARNING", logger="benchmark"):
        frame = figures.tidy(figures.load_runs(uri, "bumped"))
    assert list(frame["clean/acc"]) == [0.9]
    assert "2 of 3 FINISHED cell runs in 'bumped' were computed by an older results version" in caplog.text


def test_profiles_read_x_from_metric_names_and_from_logged_curves(frame, store):
    by_eps = figures.profile_points(frame, next(p for p in figures.PROFILES if p.name == "worst_robust_vs_eps"))
    assert sorted(by_eps["x"].unique()) == [0.05, 0.1, 0.2, 0.3]
    cell = frame.iloc[0]
    mine = by_eps[(by_eps["method"] == cell["method"]) & (by_eps["target"] == cell["target"])
                  & (by_eps["seed"] == cell["seed"])].set_index("x")["value"]
    assert mine[0.3] == cell["robust/worst/eps_0.3"] and len(mine) == 4
    # finetune/loss is a curve with one step per fine-tune epoch (1 here); its last value is the run's metric
    loss = figures.profile_points(frame, next(p for p in figures.PROFILES if p.name == "finetune_loss_vs_epoch"),
                                  store.uri)
    assert len(loss) == len(frame) and set(loss["x"]) == {1}
    assert sorted(loss["value"]) == sorted(frame["finetune/loss"])


def test_tables_regenerate_byte_identically(frame, store, tmp_path):
    first = figures.write_tables(frame, tmp_path / "a")
    again = figures.write_tables(figures.tidy(figures.load_runs(store.uri, store.experiment)), tmp_path / "b")
    assert [p.name for p in first] == [p.name for p in again] == [
        f"{name}.{ext}" for name in ("summary", "pareto") for ext in ("csv", "md", "tex")]
    for a, b in zip(first, again):
        assert a.read_bytes() == b.read_bytes(), a.name
    tex = (tmp_path / "a" / "summary.tex").read_text()
    assert "\\begin{tabular}" in tex and "$\\pm$" in tex and "magnitude\\_global" in tex


def test_make_figures_restores_deleted_files_from_the_store_alone(store, frame, tmp_path):
    out = tmp_path / "results"
    expected_tables = {p.name: p.read_bytes() for p in figures.write_tables(frame, tmp_path / "in-process")}
    (out / "figures").mkdir(parents=True)  # a results dir whose figures were deleted: only the store is left
    # -o: never (re)install the venv from a test
    done = subprocess.run(["make", "-s", "-o", ".venv/.installed", "figures", f"RESULTS={out}",
                           f"TRACKING_URI={store.uri}", f"EXPERIMENT={store.experiment}"],
                          cwd=tiny_store.ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert {p.name for p in (out / "figures").iterdir()} == expected_figure_files(frame)
    for name, content in expected_tables.items():  # another process, same bytes
        assert (out / "tables" / name).read_bytes() == content, name
    assert {p.name for p in (out / "tables").iterdir()} == {*expected_tables, "pie.csv", "pie.md", "pie.tex"}


def test_a_spec_is_one_line_and_absent_metrics_are_skipped(frame, tmp_path):
    specs = [figures.FigureSpec("train_acc_vs_sparsity", "train/acc", "train accuracy"),
             figures.FigureSpec("asr_vs_sparsity", "backdoor/asr", "attack success rate")]  # not in this store
    written = figures.write_figures(frame, tmp_path, specs)
    assert sorted(p.name for p in written) == ["train_acc_vs_sparsity__seed_cnn__digits__evasion.pdf",
                                               "train_acc_vs_sparsity__seed_cnn__digits__evasion.png"]
    robust = next(spec for spec in figures.FIGURES if spec.name == "robust_vs_sparsity")
    panels = figures.matching(frame, robust.metrics, robust.exclude)  # aggregates (worst, ensemble) excluded
    assert panels == [f"robust/{a}/eps_{e}" for a in ("apgd_linf", "apgd_t_linf", "fgsm", "pgd_linf")
                      for e in ("0.05", "0.1", "0.2", "0.3")]


def test_notebook_is_stored_without_outputs_and_executes(store, tmp_path, monkeypatch):
    path = tiny_store.ROOT / "notebooks" / "analysis.ipynb"
    notebook = nbformat.read(path, as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code and all(cell.outputs == [] and cell.execution_count is None for cell in code)
    monkeypatch.setenv("PRUNESEC_TRACKING_URI", store.uri)
    monkeypatch.setenv("PRUNESEC_EXPERIMENT", store.experiment)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    # kernel "python3" is ipykernel's native spec, which jupyter_client runs with this interpreter (the venv)
    NotebookClient(notebook, timeout=180, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    images = [o for cell in code for o in cell.outputs if "image/png" in o.get("data", {})]
    assert len(images) == 3  # robust, clean and Pareto figures drawn by the library
    texts = "".join(o.get("text", "") for cell in code for o in cell.outputs)
    assert f"{tiny_store.N_CELLS} cells;" in texts
    assert "evaluate: " in texts and "achieved sparsity " in texts  # the API example ran its two cells


def _cells(rows: list[dict], threat: str = "evasion") -> pd.DataFrame:
    """A tidy frame from hand-written cells: each row has method, target, seed and its metrics by name."""
    runs = []
    for i, row in enumerate(rows):
        row = dict(row)
        runs.append({"tags.cell_hash": f"h{i}", "start_time": i, "run_id": f"r{i}", "params.model.name": "seed_cnn",
                     "params.dataset.name": "mnist5k", "params.threat.name": threat,
                     "params.pruning.method": row.pop("method"), "params.pruning.sparsity": str(row.pop("target")),
                     "params.seed": str(row.pop("seed", 0)), **{f"metrics.{k}": v for k, v in row.items()}})
    return figures.tidy(pd.DataFrame(runs))


SEVEN = ["none", "magnitude_global", "magnitude_layerwise", "random", "threshold", "taylor", "l1_filter"]


def _seven_methods(**extra) -> pd.DataFrame:
    rows = [{"method": "none", "target": 0.0, "sparsity/achieved": 0.0, "clean/acc": 0.96, **extra}]
    rows += [{"method": m, "target": s, "sparsity/achieved": s, "clean/acc": 0.9 - s / 2, **extra}
             for m in SEVEN[1:] for s in (0.5, 0.9)]
    return _cells(rows)


def test_a_single_panel_legend_fits_inside_the_figure_with_every_method():
    spec = next(s for s in figures.FIGURES if s.name == "clean_vs_sparsity")
    fig = figures.plot_spec(_seven_methods(), spec, ("seed_cnn", "mnist5k", "evasion"))
    renderer = fig.canvas.get_renderer()
    (legend,) = fig.legends
    box, axes_box = legend.get_window_extent(renderer), fig.axes[0].get_tightbbox(renderer)
    assert 0 <= box.x0 and box.x1 <= fig.bbox.width and box.y0 >= 0  # nothing cut off at an edge
    assert box.y1 <= axes_box.y0 + 1  # below the panel (its tick labels included), not over it
    assert {"threshold", "l1_filter"} <= {t.get_text() for t in legend.get_texts()}
    plt.close(fig)


def test_dense_baseline_is_a_dashed_line_across_sparsity_not_a_lone_point():
    rows = [{"method": "none", "target": 0.0, "sparsity/achieved": 0.0, "backdoor/asr": 0.88},
            {"method": "fine_pruning", "target": 0.5, "sparsity/achieved": 0.5, "backdoor/asr": 0.6},
            {"method": "fine_pruning", "target": 0.9, "sparsity/achieved": 0.9, "backdoor/asr": 0.3}]
    spec = next(s for s in figures.FIGURES if s.name == "backdoor_asr_vs_sparsity")
    fig = figures.plot_spec(_cells(rows, threat="badnets"), spec, ("seed_cnn", "mnist5k", "badnets"))
    dense = [line for line in fig.axes[0].get_lines() if line.get_label() == "dense (none)"]
    assert len(dense) == 1 and dense[0].get_linestyle() == "--"
    assert list(dense[0].get_ydata()) == [0.88, 0.88] and list(dense[0].get_xdata()) == [0, 1]  # axes width
    plt.close(fig)


def test_collapsed_points_are_hollow_with_a_chance_line_and_left_out_of_tables():
    rows = [{"method": "none", "target": 0.0, "sparsity/achieved": 0.0, "clean/acc": 0.96,
             "robust/worst/eps_0.3": 0.0, "clean/collapsed": 0.0, "clean/chance": 0.1},
            {"method": "threshold", "target": 0.5, "sparsity/achieved": 0.5, "clean/acc": 0.9,
             "robust/worst/eps_0.3": 0.0, "clean/collapsed": 0.0, "clean/chance": 0.1},
            {"method": "threshold", "target": 0.99, "sparsity/achieved": 0.99, "clean/acc": 0.1,
             "robust/worst/eps_0.3": 0.104, "clean/collapsed": 1.0, "clean/chance": 0.1}]
    frame = _cells(rows)
    spec = next(s for s in figures.FIGURES if s.name == "worst_robust_vs_sparsity")
    fig = figures.plot_spec(frame, spec, ("seed_cnn", "mnist5k", "evasion"))
    lines = fig.axes[0].get_lines()
    hollow = [line for line in lines if line.get_markerfacecolor() == "white"]
    assert len(hollow) == 1 and list(zip(hollow[0].get_xdata(), hollow[0].get_ydata())) == [(0.99, 0.104)]
    assert hollow[0].get_linestyle() == "None"
    joined = [line for line in lines if line.get_linestyle() == "-"]
    assert joined and all(0.99 not in list(line.get_xdata()) for line in joined)  # no line runs into it
    chance = [line for line in lines if line.get_label() == "chance"]
    assert len(chance) == 1 and list(chance[0].get_ydata()) == pytest.approx([0.1, 0.1])
    assert "collapsed (clean acc. at chance)" in [t.get_text() for t in fig.legends[0].get_texts()]
    plt.close(fig)
    trend = figures.summary_table(frame)
    assert list(zip(trend["method"], trend["target"])) == [("none", 0.0), ("threshold", 0.5)]
    everything = figures.summary_table(frame, include_collapsed=True)
    assert everything.set_index("target")["n_collapsed"].to_dict() == {0.0: 0, 0.5: 0, 0.99: 1}


def test_an_ineffective_threat_is_greyed_out_with_a_note():
    rows = [{"method": m, "target": s, "sparsity/achieved": s, "backdoor/asr": 0.02, "threat/effective": 0.0}
            for m, s in (("none", 0.0), ("fine_pruning", 0.5), ("fine_pruning", 0.9))]
    spec = next(s for s in figures.FIGURES if s.name == "backdoor_asr_vs_sparsity")
    fig = figures.plot_spec(_cells(rows, threat="clean_label"), spec, ("seed_cnn", "mnist5k", "clean_label"))
    assert INEFFECTIVE_NOTE in [t.get_text() for t in fig.axes[0].texts]
    curve = next(bars for bars in fig.axes[0].containers if bars.get_label() == "fine_pruning")
    red, green, blue = curve.lines[0].get_color()[:3]
    assert max(red, green, blue) - min(red, green, blue) < 0.25  # washed towards grey
    plt.close(fig)
    effective = _cells([{**r, "threat/effective": 1.0} for r in rows], threat="badnets")
    fig = figures.plot_spec(effective, spec, ("seed_cnn", "mnist5k", "badnets"))
    assert not fig.axes[0].texts
    plt.close(fig)


def test_tables_give_the_binomial_interval_of_each_robust_accuracy_over_its_images():
    assert figures.binomial_interval(5, 10) == pytest.approx((0.187086, 0.812914), abs=1e-6)  # Clopper-Pearson
    rows = [{"method": "l1_filter", "target": 0.5, "seed": seed, "sparsity/achieved": 0.5, "clean/acc": 0.9,
             "robust/worst/eps_0.1": acc, "robust/worst/subset_size": 10.0} for seed, acc in ((0, 0.4), (1, 0.6))]
    summary = figures.summary_table(_cells(rows))
    row = summary.iloc[0]
    # pooled over the two seeds: 10 of 20 images survive every attack
    assert (row["robust/worst/eps_0.1 binom95 low"], row["robust/worst/eps_0.1 binom95 high"]) == pytest.approx(
        figures.binomial_interval(10, 20))
    markdown = figures.to_markdown(summary)
    low, high = figures.binomial_interval(10, 20)
    assert f"[{low:.3f}, {high:.3f}]" in markdown


def test_convergence_table_picks_the_dense_model_and_the_sparsest_non_collapsed_point():
    def cell(method, s, gap, collapsed=0.0):
        return {"method": method, "target": s, "sparsity/achieved": s, "clean/collapsed": collapsed,
                "robust/convergence_gap/eps_0.1": gap}
    frame = _cells([cell("none", 0.0, 0.004), cell("taylor", 0.5, 0.01), cell("taylor", 0.9, 0.02),
                    cell("taylor", 0.99, 0.0, collapsed=1.0)])
    table = figures.convergence_table(frame)
    assert list(zip(table["method"], table["target"], table["robust/convergence_gap/eps_0.1"])) == [
        ("none", 0.0, 0.004), ("taylor", 0.9, 0.02)]


def test_a_collapsed_seed_is_never_averaged_into_a_point_or_joined_in_a_profile():
    rows = [{"method": "random", "target": 0.9, "seed": 0, "sparsity/achieved": 0.9, "clean/acc": 0.8,
             "robust/worst/eps_0.1": 0.5, "robust/worst/eps_0.2": 0.3, "clean/collapsed": 0.0},
            {"method": "random", "target": 0.9, "seed": 1, "sparsity/achieved": 0.9, "clean/acc": 0.1,
             "robust/worst/eps_0.1": 0.1, "robust/worst/eps_0.2": 0.1, "clean/collapsed": 1.0}]
    frame = _cells(rows)
    spec = next(s for s in figures.FIGURES if s.name == "clean_vs_sparsity")
    fig = figures.plot_spec(frame, spec, ("seed_cnn", "mnist5k", "evasion"))
    drawn = [(tuple(line.get_ydata()), line.get_markerfacecolor()) for line in fig.axes[0].get_lines()
             if 0.9 in list(line.get_xdata())]
    assert ((0.1,), "white") in drawn  # the collapsed seed on its own
    assert all(0.45 not in ys for ys, _ in drawn)  # never the mean of 0.8 and 0.1
    plt.close(fig)
    profile = next(p for p in figures.PROFILES if p.name == "worst_robust_vs_eps")
    fig = figures.plot_profile(figures.profile_points(frame, profile), profile, ("seed_cnn", "mnist5k", "evasion"))
    lines = fig.axes[0].get_lines()
    hollow = [line for line in lines if line.get_markerfacecolor() == "white"]
    assert hollow and all(line.get_linestyle() == "None" for line in hollow)
    assert all(list(line.get_ydata()) != [0.3, 0.2] for line in lines)  # no mean over the two seeds
    plt.close(fig)


def test_the_summary_shows_each_threat_success_beside_its_baseline():
    """ASR 1.0 means little when the model picks the target class on a third of clean images already."""
    rows = [{"method": "magnitude_global", "target": 0.9, "sparsity/achieved": 0.9, "backdoor/asr": 1.0,
             "backdoor/target_rate_clean": 0.34, "poison/targeted_success": 0.5,
             "poison/targeted_success_ref": 0.4}]
    columns = list(figures.summary_table(_cells(rows, threat="badnets")).columns)
    assert columns.index("backdoor/target_rate_clean") > columns.index("backdoor/asr")
    assert columns.index("poison/targeted_success_ref") > columns.index("poison/targeted_success")


def test_the_summary_and_figures_show_the_numbers_before_and_after_the_fine_tune():
    rows = [{"method": "anp", "target": 0.0, "sparsity/achieved": 0.01, "backdoor/asr": 0.2, "clean/acc": 0.95,
             "backdoor/asr_pruned": 0.1, "clean/acc_pruned": 0.9}]
    columns = list(figures.summary_table(_cells(rows, threat="badnets")).columns)
    assert {"backdoor/asr", "backdoor/asr_pruned", "clean/acc", "clean/acc_pruned"} <= set(columns)
    spec = next(f for f in figures.FIGURES if f.metrics == "backdoor/asr_pruned")
    assert spec.x == "clean/acc_pruned"
