"""benchmark.tools.aa_gap on the tiny grid's store: the grid's worst case against the reference AutoAttack on the
same images, written into perf.json; an inflated record or metric fails the rule."""
from __future__ import annotations

import json

import numpy as np
import torch
from mlflow.tracking import MlflowClient

from benchmark.tools import aa_gap, verify
from test_verify import _cells, _copy_store_and_artifacts, _local

# AutoAttack's composition at a few iterations and queries on 30 images: the code path, in seconds
CHEAP = ["--cells", "1", "--images", "30", "--max-iter", "5", "--square-queries", "20"]


def _run(uri: str, experiment: str, out, *extra: str) -> tuple[int, dict]:
    code = aa_gap.main(["--tracking-uri", uri, "--experiment", experiment, "--out", str(out), *CHEAP, *extra])
    return code, json.loads(out.read_text())["aa_gap"]


def test_grid_worst_reads_the_per_image_worst_case_monotone_in_eps():
    record = {"robust": {"fgsm": {"0.1": "1101", "0.2": "1111"}, "pgd_linf": {"0.1": "1110", "0.2": "0110"},
                         "pgd_l2": {"0.5": "0000"}}}
    worst = aa_gap.grid_worst(record, {"fgsm", "pgd_linf"}, 4)
    # 0.1: robust under both -> images 0 and 1; 0.2: also robust at 0.1 and under both at 0.2 -> image 1
    assert worst == {0.1: 0.5, 0.2: 0.25}
    assert aa_gap.grid_worst(record, {"fgsm", "pgd_linf"}, 2) == {0.1: 1.0, 0.2: 0.5}


def test_the_gap_is_written_per_cell_and_eps_and_an_inflated_robust_accuracy_fails(store, tmp_path, capsys):
    uri = _copy_store_and_artifacts(store, tmp_path)
    out = tmp_path / "perf.json"
    out.write_text(json.dumps({"default_grid_first_s": 1.0}))

    code, result = _run(uri, store.experiment, out, "--tolerance", "0.99")
    assert code == 0 and result["ok"] and result["complete"], capsys.readouterr().out
    assert json.loads(out.read_text())["default_grid_first_s"] == 1.0  # make perf's keys are kept
    rows = result["rows"]
    cells = sorted({r["cell"] for r in rows})
    assert len(cells) >= 1 and len(rows) == 4 * len(cells)  # digits: 4 L-inf eps per cell
    for row in rows:
        assert row["images"] == 30 and row["gap"] == row["grid_worst"] - row["aa_robust"]
        assert row["grid_worst_logged"] is not None and 0 <= row["aa_robust"] <= 1
    assert result["max_gap"] == max(r["gap"] for r in rows)

    # the tolerance the untampered store just meets: the same run (same seeds, same images) passes it
    tolerance = f"{max(result['max_gap'], 0.0) + 0.01:.4f}"
    assert _run(uri, store.experiment, out, "--tolerance", tolerance)[0] == 0

    # one cell's record claims every image it got right survived every attack, its metrics raised to match
    victim = _cells(uri, store.experiment)[cells[0]]
    client = MlflowClient(tracking_uri=uri)
    path = _local(client, victim, verify.PER_IMAGE)
    record = json.loads(path.read_text())
    attacked = [r for r in rows if r["cell"] == cells[0]]
    assert attacked[-1]["grid_worst"] < float(np.mean([c == "1" for c in record["clean_correct"][:30]])) - 0.1
    for per_eps in record["robust"].values():
        for eps in per_eps:
            per_eps[eps] = record["clean_correct"][:len(per_eps[eps])]
    path.write_text(json.dumps(record))
    n = min(len(f) for per_eps in record["robust"].values() for f in per_eps.values())
    inflated = float(np.mean([c == "1" for c in record["clean_correct"][:n]]))
    for eps in record["robust"]["pgd_linf"]:
        client.log_metric(victim.info.run_id, f"robust/worst/eps_{eps}", inflated)

    code, tampered = _run(uri, store.experiment, out, "--tolerance", tolerance)
    assert code == 1 and tampered["failed_cells"] == [cells[0]]
    victim_rows = [r for r in tampered["rows"] if r["cell"] == cells[0]]
    assert any(r["gap"] > float(tolerance) and not r["ok"] for r in victim_rows)
    assert all(r["ok"] for r in tampered["rows"] if r["cell"] != cells[0])


def test_a_logged_worst_case_that_is_not_its_records_fails(store, tmp_path):
    uri = _copy_store_and_artifacts(store, tmp_path)
    out = tmp_path / "perf.json"
    code, result = _run(uri, store.experiment, out, "--tolerance", "0.99", "--images", "10", "--max-iter", "1")
    assert code == 0
    cell = result["rows"][0]["cell"]
    run = _cells(uri, store.experiment)[cell]
    MlflowClient(tracking_uri=uri).log_metric(run.info.run_id, "robust/worst/eps_0.1",
                                              run.data.metrics["robust/worst/eps_0.1"] + 0.01)
    code, result = _run(uri, store.experiment, out, "--tolerance", "0.99", "--images", "10", "--max-iter", "1")
    assert code == 1 and result["failed_cells"] == [cell]
    assert any("is not its record's" in p for r in result["rows"] for p in r["problems"])


def test_bad_input_exits_2_with_one_line_before_any_compute(store, tmp_path, capsys):
    out = tmp_path / "perf.json"
    base = ["--tracking-uri", store.uri, "--experiment", store.experiment, "--out", str(out)]
    assert aa_gap.main([*base, "--images", "0"]) == 2
    assert aa_gap.main([*base, "--tolerance", "2"]) == 2
    assert aa_gap.main(["--tracking-uri", f"sqlite:///{tmp_path / 'none.db'}", "--experiment", "x",
                        "--out", str(out)]) == 2
    assert aa_gap.main([*base[:2], "--experiment", "no_such", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 4 and "--images=0" in err[0] and "--tolerance=2" in err[1] and "none.db" in err[2] \
        and "'no_such'" in err[3]
    assert not out.exists() and not (tmp_path / "none.db").exists()


def test_a_gap_of_exactly_the_tolerance_in_images_passes():
    """24 of 50 robust under AutoAttack against the grid's 25 of 50: a gap of 1 image, 2 points, within 2 points."""
    y = torch.zeros(50, dtype=torch.long)
    label = torch.cat([torch.zeros(24, dtype=torch.long), torch.ones(26, dtype=torch.long)])
    assert aa_gap.robust_share(label, y) == 24 / 50
    assert 25 / 50 - aa_gap.robust_share(label, y) <= aa_gap.TOLERANCE + 1e-9
