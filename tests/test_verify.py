"""benchmark.tools.verify: its PGD and sparsity recount against known answers, and the cross-check on a real store,
clean and tampered."""
from __future__ import annotations

import copy
import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import urlparse

import numpy as np
import pytest
import torch
import torch.nn as nn
from mlflow.tracking import MlflowClient

import tiny_store
from conftest import ROOT, cli_env
from benchmark.tools import verify
from models import build_model


def _linear_two_class(pixels: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(pixels, 2))
    with torch.no_grad():
        model[1].weight.mul_(2.0)  # logit margins of a few units: softmax far from saturation
    return model.eval()


@pytest.mark.parametrize("restarts", [0, 2])
def test_pgd_finds_the_analytic_worst_case_of_a_linear_model(restarts):
    """Two-class linear model: the margin m(x) = d.x + c (d = w_y - w_other) is lowest over the L-inf ball
    intersected with [0, 1]^n at the corner that moves each pixel against sign(d_j) as far as both allow; sign-PGD
    with 10 steps of eps/4 reaches it from any start in the ball."""
    eps, n = 0.05, 400
    model = _linear_two_class(64, seed=0)
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(n, 1, 8, 8, generator=g), torch.randint(0, 2, (n,), generator=g)
    w, b = model[1].weight.detach(), model[1].bias.detach()
    d = w[y] - w[1 - y]
    flat = x.flatten(1)
    margin = (d * flat).sum(1) + b[y] - b[1 - y]
    worst_step = torch.where(d > 0, torch.clamp(-flat, min=-eps), torch.clamp(1 - flat, max=eps))
    worst = margin + (d * worst_step).sum(1)
    decided = (worst.abs() > 1e-4) & (margin.abs() > 1e-4)

    fooled = verify.pgd_linf_fooled(model, x, y, eps, eps * 0.25, 10, restarts, torch.arange(n), seed=0,
                                    batch_size=150)

    expected = worst > 0  # no point of the ball fools the model, so no iterate does
    assert expected[decided & (margin > 0)].sum() >= 20 and (~expected[decided & (margin > 0)]).sum() >= 20
    assert torch.equal(~fooled[decided], expected[decided])


def test_pgd_agrees_with_the_pipelines_art_pgd_at_zero_restarts(trained_seed_cnn, digits):
    """Both judge every iterate; starting at the clean image both take the same steps (up to float rounding)."""
    from art.attacks.evasion import ProjectedGradientDescent

    from attacks.any_iterate import fooled_at_any_point
    from attacks.art_classifier import art_classifier, to_numpy

    model = copy.deepcopy(trained_seed_cnn).eval()
    x, y = digits.x_test[:120], digits.y_test[:120]
    eps = 0.1
    classifier = art_classifier(model, tuple(x.shape[1:]), digits.num_classes, torch.device("cpu"))
    pgd = ProjectedGradientDescent(classifier, norm=np.inf, eps=eps, eps_step=eps * 0.25, max_iter=10,
                                   num_random_init=0, batch_size=60, verbose=False)
    art_fooled = torch.from_numpy(fooled_at_any_point(pgd, classifier, to_numpy(x), y.numpy(), 60))

    ours = verify.pgd_linf_fooled(model.requires_grad_(False), x, y, eps, eps * 0.25, 10, 0, torch.arange(120), 0,
                                  batch_size=60)

    assert ours.sum() > 10  # the attack bites, so agreement is not trivial
    assert (ours != art_fooled).sum() <= 2


def test_sparsity_recount_counts_zeros_and_removed_channels_against_the_dense_architecture():
    dense = build_model("seed_cnn", 1, 16, 10)  # conv 32x1x3x3, conv 64x32x3x3, linear 10x(64*2*2)
    state = {k: v.clone() for k, v in dense.state_dict().items()}
    state["0.weight"].view(-1)[:100] = 0  # unstructured: 100 zeros
    state["3.weight"] = state["3.weight"][:32]  # structured: half the filters gone ...
    state["7.weight"] = state["7.weight"][:, :128]  # ... and the head's matching inputs
    kept_body, total_body = (288 - 100) + 32 * 32 * 9, 288 + 64 * 32 * 9
    assert verify.recount_sparsity(dense, state, prune_head=True) == pytest.approx(
        1 - (kept_body + 10 * 128) / (total_body + 10 * 256), abs=1e-12)
    assert verify.recount_sparsity(dense, state, prune_head=False) == pytest.approx(1 - kept_body / total_body,
                                                                                     abs=1e-12)


def test_sample_is_seeded_and_holds_both_kinds():
    runs = [SimpleNamespace(info=SimpleNamespace(run_name=f"cell{i:02d}", run_id=str(i)),
                            data=SimpleNamespace(tags={"structured": "true" if i == 7 else "false"}))
            for i in range(20)]
    for seed in range(30):
        picked = verify.sample_cells(runs, 3, seed)
        assert len(picked) == 3 and runs[7] in picked
        assert picked == verify.sample_cells(runs, 3, seed)
    assert verify.sample_cells(runs, None, 0) == runs


def test_verify_passes_on_a_real_store(store, capsys):
    code = verify.main(["--tracking-uri", store.uri, "--experiment", store.experiment, "--all"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert f"[verify {tiny_store.N_CELLS}/{tiny_store.N_CELLS}]" in out
    assert out.count("pgd eps=") == tiny_store.N_CELLS * 4  # digits: 4 L-inf budgets, every cell attacked
    assert "FAIL" not in out


def _copy_store(store, tmp_path) -> str:
    """A copy of the store's database (the artifacts stay where they are, read-only), safe to tamper with."""
    with sqlite3.connect(store.results / "mlflow.db") as source, sqlite3.connect(tmp_path / "mlflow.db") as copy:
        source.backup(copy)
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def _copy_store_and_artifacts(store, tmp_path) -> str:
    """A copy of the store's database and artifacts, the database pointing at the copied artifacts."""
    uri = _copy_store(store, tmp_path)
    old = MlflowClient(tracking_uri=uri).get_experiment_by_name(store.experiment).artifact_location
    artifacts = tmp_path / "artifacts"
    shutil.copytree(urlparse(old).path, artifacts)
    new = artifacts.as_uri()
    with sqlite3.connect(tmp_path / "mlflow.db") as db:
        db.execute("UPDATE experiments SET artifact_location = replace(artifact_location, ?, ?)", (old, new))
        db.execute("UPDATE runs SET artifact_uri = replace(artifact_uri, ?, ?)", (old, new))
    return uri


def _cells(uri: str, experiment: str) -> dict[str, object]:
    client = MlflowClient(tracking_uri=uri)
    return {r.info.run_name: r for r in verify.finished_cells(client, experiment)}


def _local(client: MlflowClient, run, path: str) -> Path:
    """The file of a run's artifact in a local (file://) artifact store."""
    return Path(urlparse(run.info.artifact_uri).path) / path


def _verdicts(out: str, cell: str) -> dict[str, str]:
    """check -> OK / FAIL for one cell in verify's table."""
    rows = [line.split() for line in out.splitlines() if line.strip().startswith(cell)]
    return {" ".join(r[2:4]) if r[2] == "pgd" or r[2] == "clean" and r[3] == "flags" else r[2]: r[-1] for r in rows}


def test_a_metric_raised_by_one_point_fails(store, tmp_path, capsys):
    uri = _copy_store(store, tmp_path)
    client = MlflowClient(tracking_uri=uri)
    runs = sorted(verify.finished_cells(client, store.experiment), key=lambda r: r.info.run_name)
    robust_run, sparsity_run = runs[0], runs[-1]
    key = "robust/pgd_linf/eps_0.1"
    client.log_metric(robust_run.info.run_id, key, robust_run.data.metrics[key] + 0.01)
    client.log_metric(sparsity_run.info.run_id, "sparsity/achieved",
                      sparsity_run.data.metrics["sparsity/achieved"] - 0.002)

    code = verify.main(["--tracking-uri", uri, "--experiment", store.experiment, "--all"])
    out = capsys.readouterr().out
    assert code == 1, out
    summary = out.strip().splitlines()[-1]
    assert "2 cells beyond tolerance" in summary
    assert robust_run.info.run_name in summary and sparsity_run.info.run_name in summary
    failed = [line for line in out.splitlines() if line.rstrip().endswith("FAIL")]
    assert len(failed) == 2, out
    assert "pgd eps=0.1" in failed[0] + failed[1] and "sparsity" in failed[0] + failed[1]
    assert "the metric is not its record's" in failed[0] + failed[1]


def test_weights_swapped_with_another_cells_fail_image_by_image(store, tmp_path, capsys):
    """Same method and sparsity, the other seed: the sparsity recount cannot tell them apart, the images can."""
    uri = _copy_store_and_artifacts(store, tmp_path)
    cells = _cells(uri, store.experiment)
    victim, donor = (cells[f"seed_cnn|magnitude_global|s=0.5|evasion|seed={s}"] for s in (0, 1))
    client = MlflowClient(tracking_uri=uri)
    weights = lambda run: _local(client, run, f"model/{run.data.tags['pruned_key']}.safetensors")  # noqa: E731
    shutil.copyfile(weights(donor), weights(victim))

    code = verify.main(["--tracking-uri", uri, "--experiment", store.experiment, "--all"])
    out = capsys.readouterr().out
    assert code == 1, out
    assert "1 cells beyond tolerance: " + victim.info.run_name in out
    verdicts = _verdicts(out, victim.info.run_name)
    assert verdicts["sparsity"] == "OK" and verdicts["images"] == "OK"
    assert "FAIL" in (verdicts["clean flags"], verdicts["pgd eps=0.05"], verdicts["pgd eps=0.1"]), out


def test_a_test_subset_shifted_by_one_image_fails(store, tmp_path, capsys):
    """One cell's record names the neighbouring positions (its hashes now disagree with the files); another's names
    them with their own hashes (a consistent record of other images): its flags disagree with the re-run."""
    uri = _copy_store_and_artifacts(store, tmp_path)
    cells = _cells(uri, store.experiment)
    named, consistent = (cells[f"seed_cnn|l1_filter|s=0.5|evasion|seed={s}"] for s in (0, 1))
    client = MlflowClient(tracking_uri=uri)
    for run, rehash in ((named, False), (consistent, True)):
        path = _local(client, run, verify.PER_IMAGE)
        record = json.loads(path.read_text())
        record["index"] = record["index"][1:] + record["index"][:1]
        if rehash:
            record["sha256"] = record["sha256"][1:] + record["sha256"][:1]
            record["label"] = record["label"][1:] + record["label"][:1]
        path.write_text(json.dumps(record))

    code = verify.main(["--tracking-uri", uri, "--experiment", store.experiment, "--all"])
    out = capsys.readouterr().out
    assert code == 1, out
    assert "2 cells beyond tolerance" in out
    assert _verdicts(out, named.info.run_name)["images"] == "FAIL"
    verdicts = _verdicts(out, consistent.info.run_name)
    assert verdicts["images"] == "OK" and verdicts["sparsity"] == "OK" and verdicts["clean"] == "OK"
    assert "FAIL" in (verdicts["clean flags"], verdicts["pgd eps=0.05"], verdicts["pgd eps=0.1"]), out


def test_verify_imports_no_project_module_but_the_architectures_and_not_art(store):
    """Run in a fresh interpreter on the store: the project modules it loaded are models/ (and what the model
    registry needs) and verify itself."""
    code = ("import json, sys; from benchmark.tools import verify; "
            f"rc = verify.main(['--tracking-uri', {store.uri!r}, '--experiment', {store.experiment!r}, "
            "'--sample', '1']); "
            "print(json.dumps([rc, sorted(sys.modules)]))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=cli_env(), capture_output=True, text=True,
                          timeout=300)
    rc, modules = json.loads(done.stdout.strip().splitlines()[-1])
    assert rc == 0, done.stdout[-2000:]
    project = {m for m in modules if m.split(".")[0] in ("attacks", "benchmark", "models")}
    # models/ imports its registry (which imports the models of installed plugins) and, through
    # models/checkpoint.py and models/checks.py, the config checks
    through_models = {"benchmark.registry", "benchmark.plugins", "benchmark.checks", "benchmark.inputs",
                      "benchmark.datasets"}
    assert project <= {"benchmark", "benchmark.tools", "benchmark.tools.verify", *through_models} | {
        m for m in project if m == "models" or m.startswith("models.")}, sorted(project)
    assert not any(m == "art" or m.startswith("art.") for m in modules)


def test_bad_input_exits_2_with_one_line_before_any_compute(store, tmp_path, capsys):
    missing = tmp_path / "nothing.db"
    assert verify.main(["--tracking-uri", f"sqlite:///{missing}", "--experiment", "x"]) == 2
    assert not missing.exists()  # MLflow would have created an empty store
    assert verify.main(["--tracking-uri", store.uri, "--experiment", "no_such_experiment"]) == 2
    MlflowClient(tracking_uri=_copy_store(store, tmp_path)).create_experiment("empty", artifact_location=tmp_path.as_uri())
    assert verify.main(["--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", "--experiment", "empty"]) == 2
    assert verify.main(["--tracking-uri", store.uri, "--experiment", store.experiment, "--sample", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 4 and "nothing.db" in err[0] and "'no_such_experiment'" in err[1] \
        and "no FINISHED cells" in err[2] and "--sample=0" in err[3]
