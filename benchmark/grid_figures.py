"""A grid's figures and tables on its parent run: its own cells (run now or skipped as already finished) drawn
when the grid ends (robust and clean accuracy, backdoor ASR vs sparsity; pruning-identified exemplars), or copied
from an earlier grid run of the same commit that shows the same cell runs. Called by the grid's Hydra callback
(benchmark/grid.py); imports MLflow and the figures' libraries only when called."""
from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

GRID_FIGURES = ("robust_vs_sparsity", "clean_vs_sparsity", "backdoor_asr_vs_sparsity")
# On a grid's parent run once its figures and tables are logged: a digest of the cell runs they show.
GRID_CELLS_TAG = "grid_cells"


def log_grid_artifacts(uri: str, experiment: str, parent_id: str, cells: list[dict]) -> None:
    """The grid's own cells (run now or skipped as already finished) as figures (robust and clean accuracy, backdoor
    ASR vs sparsity) and tables (pruning-identified exemplars among them), logged to the parent run, so the MLflow
    UI shows the curves on the grid's run.

    When an earlier grid's parent run shows the same cell runs and was made by the same commit of a clean checkout
    (a re-run whose cells were all skipped), its figures and tables are copied instead of drawn again."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    # a job skipped for an earlier job of the grid that computes its cell has no run of its own
    run_ids = sorted({cell["run_id"] for cell in cells if cell["status"] in ("finished", "skipped") and cell["run_id"]})
    shown = hashlib.sha256(",".join(run_ids).encode()).hexdigest()[:16]
    with tempfile.TemporaryDirectory(prefix="grid-artifacts-") as out:
        if (earlier := _grid_run_showing(client, parent_id, shown)) is not None:
            import mlflow.artifacts

            mlflow.artifacts.download_artifacts(run_id=earlier, dst_path=out, tracking_uri=uri)
        elif not _draw_grid_artifacts(uri, experiment, run_ids, Path(out)):
            return
        client.log_artifacts(parent_id, out)
    client.set_tag(parent_id, GRID_CELLS_TAG, shown)


def _grid_run_showing(client, parent_id: str, shown: str) -> str | None:
    """An earlier grid parent run whose figures show the cell runs `shown` and were drawn by this same commit of a
    clean checkout (the tags every run gets from tracking.provenance_tags); None if there is none."""
    parent = client.get_run(parent_id)
    commit, dirty = parent.data.tags.get("git_commit", "unknown"), parent.data.tags.get("git_dirty")
    if commit == "unknown" or dirty != "false":
        return None
    earlier = client.search_runs([parent.info.experiment_id], max_results=1, order_by=["attributes.start_time DESC"],
                                 filter_string=f"tags.grid = 'true' and tags.{GRID_CELLS_TAG} = '{shown}' and "
                                               f"tags.git_commit = '{commit}' and tags.git_dirty = 'false'")
    return earlier[0].info.run_id if earlier else None


def _draw_grid_artifacts(uri: str, experiment: str, run_ids: list[str], out: Path) -> bool:
    """Draw the figures and tables of the cell runs `run_ids` into `out`; False when there is nothing to show."""
    from benchmark import figures  # matplotlib and scipy: imported when a grid ends, not by every cell

    frame = figures.tidy(figures.load_runs(uri, experiment))
    frame = frame[frame[figures.RUN_ID].isin(run_ids)].reset_index(drop=True)
    if frame.empty:
        return False
    figures.write_figures(frame, out / "figures", [spec for spec in figures.FIGURES if spec.name in GRID_FIGURES])
    figures.write_tables(frame, out / "tables")
    pies, class_impact = figures.forgetting_tables(frame, uri, experiment)
    figures.write_table(pies, out / "tables", "pie", figures.PIE_CAPTION)
    figures.write_table(class_impact, out / "tables", "class_impact", figures.CLASS_IMPACT_CAPTION)
    return True
