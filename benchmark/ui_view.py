"""The MLflow UI's saved view of an experiment's cells, the page `make ui`'s link opens.

MLflow 3.17's runs page keeps saved views as experiment tags `mlflow.sharedViewState.<id>` and opens one from the
URL parameter `viewStateShareKey=<id>` (its "Save as new view" writes the same tag; the views are listed in the
page's views menu, top right). The tag holds `{"name", "createdAt", "updatedAt", "state"}`, `state` being a JSON
string of the page's search facets (`searchFilter`, `orderByKey`, ...) and UI state (`selectedColumns`,
`compareRunCharts`, ...). MLflow leaves the rows' expanded state out of a saved view, so the view does not expand
the grid rows: its search filter leaves the grids' parent runs out, and the runs table shows a run under its
parent only when the parent is listed, so every cell is a row of its own."""
from __future__ import annotations

import json
import re
import time

from benchmark.version import RESULTS_VERSION

VIEW_ID = "prunesec-cells"
VIEW_TAG_PREFIX = "mlflow.sharedViewState."
VIEW_NAME = "Cells: robustness vs sparsity"
SPARSITY, CLEAN = "sparsity/achieved", "clean/acc"
# the security metrics plotted against sparsity: worst-case robust accuracy per eps, backdoor success
SECURITY_METRICS = re.compile(r"robust/worst/eps_(?P<eps>[0-9.]+)|backdoor/asr")


def cells_filter() -> str:
    """The runs the view lists: FINISHED cells of this results version (what the figures show), no grid runs."""
    return (f"tags.cell_hash != '' and attributes.status = 'FINISHED' "
            f"and tags.results_version = '{RESULTS_VERSION}'")


def security_metrics(metric_keys) -> list[str]:
    """The keys among `metric_keys` plotted against sparsity: worst-case robust accuracy by eps, then the rest."""
    found = [key for key in set(metric_keys) if SECURITY_METRICS.fullmatch(key)]
    return sorted(found, key=lambda key: (not key.startswith("robust/"),
                                          float(SECURITY_METRICS.fullmatch(key)["eps"] or 0), key))


def _column(kind: str, key: str) -> str:
    return f"{kind}.`{key}`"  # the runs table's column id (MLflow's makeCanonicalSortKey)


def _scatter(y_key: str, section: str) -> dict:
    return {"uuid": f"{VIEW_ID}-{y_key}", "type": "SCATTER", "metricSectionId": section, "deleted": False,
            "isGenerated": False, "runsCountToCompare": 100,
            "xaxis": {"key": SPARSITY, "type": "METRIC"}, "yaxis": {"key": y_key, "type": "METRIC"}}


def cells_view_state(metric_keys) -> dict:
    """The page state of the view: a row per cell (its name says model, method, target sparsity, threat and seed)
    with the achieved sparsity, clean accuracy and security metrics as columns, sorted by sparsity; one chart
    section first, a scatter of each security metric (and clean accuracy) against the achieved sparsity; every
    cell plotted (the UI's default plots the first 10 runs)."""
    plotted = [*security_metrics(metric_keys), CLEAN]
    columns = [_column("metrics", key) for key in (SPARSITY, CLEAN, *plotted[:-1])]
    section = f"{VIEW_ID}-section"
    return {
        "searchFilter": cells_filter(), "orderByKey": _column("metrics", SPARSITY), "orderByAsc": True,
        "selectedColumns": columns,  # the table shows metric columns in the order of their names
        "runsHiddenMode": "SHOW_ALL",
        "compareRunSections": [{"uuid": section, "name": "Security vs sparsity", "display": True,
                                "isReordered": True, "deleted": False, "isGenerated": False}],
        "compareRunCharts": [_scatter(key, section) for key in plotted],
        "isAccordionReordered": True,  # keeps this section first; the UI adds its own sections after it
        "hideEmptyCharts": True,
    }


def write_cells_view(client, experiment_id: str) -> str:
    """Write (or rewrite) the view of the experiment's cells as the tag MLflow's runs page reads; returns its id,
    the value of the page's `viewStateShareKey` parameter."""
    runs = client.search_runs([experiment_id], cells_filter(), max_results=50000)
    metric_keys = {key for run in runs for key in run.data.metrics}
    now = int(time.time() * 1000)
    envelope = {"name": VIEW_NAME, "createdAt": now, "updatedAt": now,
                "state": json.dumps(cells_view_state(metric_keys))}
    client.set_experiment_tag(experiment_id, VIEW_TAG_PREFIX + VIEW_ID, json.dumps(envelope))
    return VIEW_ID
