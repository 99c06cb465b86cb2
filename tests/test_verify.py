"""benchmark.tools.verify: its PGD and sparsity recount against known answers, and the cross-check on a real store,
clean and tampered."""
from __future__ import annotations

import sqlite3
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn as nn
from mlflow.tracking import MlflowClient

import tiny_store
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

    survived = verify.pgd_linf_survivors(model, x, y, eps, eps * 0.25, 10, restarts, torch.Generator().manual_seed(0),
                                         batch_size=150)

    expected = worst > 0
    assert expected[decided & (margin > 0)].sum() >= 20 and (~expected[decided & (margin > 0)]).sum() >= 20
    assert torch.equal(survived[decided], expected[decided])


def test_pgd_agrees_with_art_at_zero_restarts(trained_seed_cnn, digits):
    from art.attacks.evasion import ProjectedGradientDescent

    from attacks.art_classifier import art_classifier, to_numpy

    model = trained_seed_cnn.eval()
    x, y = digits.x_test[:120], digits.y_test[:120]
    eps = 0.1
    classifier = art_classifier(model, tuple(x.shape[1:]), digits.num_classes, torch.device("cpu"))
    x_art = ProjectedGradientDescent(classifier, norm=np.inf, eps=eps, eps_step=eps * 0.25, max_iter=10,
                                     num_random_init=0, batch_size=60, verbose=False).generate(x=to_numpy(x), y=y.numpy())
    art_survived = torch.from_numpy(classifier.predict(x_art).argmax(1)) == y

    ours = verify.pgd_linf_survivors(model.requires_grad_(False), x, y, eps, eps * 0.25, 10, 0,
                                     torch.Generator().manual_seed(0), batch_size=60)

    clean = model(x).argmax(1) == y
    assert ours.sum() < clean.sum() - 10  # the attack bites, so agreement is not trivial
    assert (ours != art_survived).sum() <= 2


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


def test_tampered_metrics_fail_naming_the_cells(store, tmp_path, capsys):
    uri = _copy_store(store, tmp_path)
    client = MlflowClient(tracking_uri=uri)
    runs = sorted(verify.finished_cells(client, store.experiment), key=lambda r: r.info.run_name)
    robust_run, sparsity_run = runs[0], runs[-1]
    key = "robust/pgd_linf/eps_0.1"
    logged = robust_run.data.metrics[key]
    client.log_metric(robust_run.info.run_id, key, logged + 0.4 if logged <= 0.5 else logged - 0.4)
    client.log_metric(sparsity_run.info.run_id, "sparsity/achieved",
                      sparsity_run.data.metrics["sparsity/achieved"] - 0.002)

    code = verify.main(["--tracking-uri", uri, "--experiment", store.experiment, "--all"])
    out = capsys.readouterr().out
    assert code == 1, out
    summary = out.strip().splitlines()[-1]
    assert "2 cells beyond tolerance" in summary
    assert robust_run.info.run_name in summary and sparsity_run.info.run_name in summary
    failed = [line for line in out.splitlines() if line.rstrip().endswith("FAIL")]
    assert len(failed) == 2 and "pgd eps=0.1" in failed[0] + failed[1] and "sparsity" in failed[0] + failed[1]


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
