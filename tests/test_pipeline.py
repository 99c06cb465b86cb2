"""Known-answer tests of the walking skeleton: pruning, fine-tuning, evasion, one cell end to end."""
from __future__ import annotations

import copy

import pytest
import torch

from attacks import build_threat
from benchmark import measure
from benchmark.cache import ModelCache
from benchmark.cell import run_cell
from benchmark.pruning import prune
from benchmark.pruning.common import achieved_sparsity, layer_weight_counts, PruneContext, finalize, load_state_into, prunable_layers
from benchmark.training import accuracy_and_loss, fit
from models import build_model

CPU = torch.device("cpu")
SKELETON_METHODS = ["magnitude_global", "magnitude_layerwise", "random", "l1_filter"]


def _ctx(digits):
    return PruneContext(example_inputs=digits.x_train[:1], calibration=(digits.x_train[:256], digits.y_train[:256]), seed=0)


def _prune(model, cfg_factory, digits, method, sparsity, *extra):
    cfg = cfg_factory(f"pruning={method}", f"pruning.sparsity={sparsity}", *extra)
    return prune(copy.deepcopy(model), cfg.pruning, _ctx(digits)), cfg


def _sparsity(dense, model, prune_head=True):
    return achieved_sparsity(layer_weight_counts(dense, prune_head), model, prune_head)[0]


@pytest.mark.parametrize("method", SKELETON_METHODS)
@pytest.mark.parametrize("target", [0.5, 0.9])
def test_method_reaches_target_sparsity(trained_seed_cnn, cfg_factory, digits, method, target):
    outcome, _ = _prune(trained_seed_cnn, cfg_factory, digits, method, target)
    achieved = _sparsity(trained_seed_cnn, finalize(outcome.model))
    # Structured pruning removes whole channels; on this small CNN the closest achievable value is within 2%.
    assert abs(achieved - target) <= (0.02 if outcome.structured else 0.01), achieved


def test_unstructured_layerwise_methods_prune_every_layer_equally(trained_seed_cnn, cfg_factory, digits):
    for method in ("magnitude_layerwise", "random"):
        outcome, _ = _prune(trained_seed_cnn, cfg_factory, digits, method, 0.7)
        model = finalize(outcome.model)
        for name, layer in prunable_layers(model):
            zeros = (layer.weight == 0).float().mean().item()
            assert abs(zeros - 0.7) < 0.01, (method, name, zeros)


def test_threshold_applies_the_seed_rule_and_reports_its_real_sparsity(trained_seed_cnn, cfg_factory, digits):
    outcome, _ = _prune(trained_seed_cnn, cfg_factory, digits, "threshold", 0.5)
    model = finalize(outcome.model)
    for (_, dense_layer), (_, layer) in zip(prunable_layers(trained_seed_cnn), prunable_layers(model)):
        w = dense_layer.weight.detach()
        keep = w.abs() > 0.5 * w.abs().max()
        assert torch.equal(layer.weight != 0, keep)
    achieved = _sparsity(trained_seed_cnn, model)
    assert outcome.info["pruning/threshold_rate"] == 0.5
    assert 0.5 < achieved < 1.0 and abs(achieved - 0.5) > 0.05  # the rate is not the sparsity


def test_structured_pruning_shrinks_tensors_and_macs_but_keeps_output_shape(trained_seed_cnn, cfg_factory, digits):
    outcome, _ = _prune(trained_seed_cnn, cfg_factory, digits, "l1_filter", 0.7)
    model = outcome.model
    x = digits.x_test[:5]
    assert model(x).shape == trained_seed_cnn(x).shape == (5, 10)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs[0].out_channels < 32 and convs[1].out_channels < 64
    macs, params = measure.macs_and_params(model, x[:1])
    macs_dense, params_dense = measure.macs_and_params(trained_seed_cnn, x[:1])
    assert macs < 0.5 * macs_dense and params < 0.5 * params_dense
    model(x).sum().backward()  # still trainable


@pytest.mark.parametrize("method", ["magnitude_global", "threshold"])
def test_pruned_weights_stay_zero_through_finetuning(trained_seed_cnn, cfg_factory, digits, method):
    outcome, _ = _prune(trained_seed_cnn, cfg_factory, digits, method, 0.8)
    masks = {name: (m.weight == 0).clone() for name, m in prunable_layers(outcome.model)}
    before = {name: m.weight.detach().clone() for name, m in prunable_layers(outcome.model)}
    fit(outcome.model, digits.x_train, digits.y_train, epochs=1, lr=1e-3, batch_size=64, seed=0, device=CPU, desc="ft")
    model = finalize(outcome.model)
    for name, layer in prunable_layers(model):
        assert torch.all(layer.weight[masks[name]] == 0), name
        assert not torch.equal(layer.weight, before[name]), f"{name}: surviving weights were not fine-tuned"


def test_structured_model_survives_the_safetensors_cache_round_trip(trained_seed_cnn, cfg_factory, digits):
    outcome, _ = _prune(trained_seed_cnn, cfg_factory, digits, "l1_filter", 0.7)
    restored = load_state_into(build_model("seed_cnn", 1, 16, 10), outcome.model.state_dict())
    x = digits.x_test[:20]
    assert torch.equal(restored(x), outcome.model(x))


def test_pgd_breaks_an_undefended_model_and_robust_accuracy_falls_with_eps(trained_seed_cnn, cfg_factory, digits):
    cfg = cfg_factory("threat=evasion", "threat.subset=200", "dataset.eps=[0.0,0.05,0.1,0.2,0.3]")
    report = build_threat(cfg.threat).evaluate(copy.deepcopy(trained_seed_cnn), digits, CPU, seed=0)
    clean, _ = accuracy_and_loss(trained_seed_cnn, digits.x_test, digits.y_test, CPU)
    assert clean > 0.85
    for attack in ("fgsm", "pgd_linf"):
        curve = [report.metrics[f"robust/{attack}/eps_{e:g}"] for e in (0.0, 0.05, 0.1, 0.2, 0.3)]
        assert curve[0] == pytest.approx(report.metrics["robust/subset_clean_acc"])
        assert all(a >= b for a, b in zip(curve, curve[1:])), (attack, curve)
    assert report.metrics["robust/pgd_linf/eps_0.3"] < 0.1 < 0.85 < clean
    # PGD is at least as strong as FGSM here (no gradient masking on a plain CNN)
    assert report.metrics["robust/pgd_linf/eps_0.1"] <= report.metrics["robust/fgsm/eps_0.1"]
    # per image over both attacks on the same images: no better than either
    assert report.metrics["robust/worst/eps_0.1"] <= report.metrics["robust/pgd_linf/eps_0.1"]


def _deterministic(metrics):
    # wall-clock measurements (time/..., CPU latency and speed-up) differ between identical runs
    return {k: v for k, v in metrics.items() if not k.startswith(("time/", "cache/", "cost/latency", "cost/speedup"))}


def test_cell_is_reproducible_and_skipped_once_finished(cfg_factory, tmp_path):
    overrides = ("pruning=magnitude_global", "pruning.sparsity=0.7", "threat=pgd")
    first = run_cell(cfg_factory(*overrides))
    assert first.status == "finished" and first.metrics["clean/acc"] > 0.6
    assert first.metrics["sparsity/achieved"] == pytest.approx(0.7, abs=0.01)
    assert run_cell(cfg_factory(*overrides)).status == "skipped"
    # force=true recomputes everything (dense training included, caches bypassed): identical numbers on CPU
    again = run_cell(cfg_factory(*overrides, "force=true"))
    assert again.status == "finished" and again.run_id != first.run_id
    assert _deterministic(again.metrics) == _deterministic(first.metrics)
    assert again.metrics["cache/dense_hit"] == 0.0
    # another seed is another cell with another dense model: other weights (accuracies may coincide)
    other = run_cell(cfg_factory(*overrides, "seed=1"))
    assert other.cell_hash != first.cell_hash
    dense = sorted((tmp_path / "cache" / "dense").glob("*.safetensors"))
    assert len(dense) == 2
    weights = [ModelCache(tmp_path / "cache").load("dense", path.stem)[0] for path in dense]
    assert not any(torch.equal(weights[0][k], weights[1][k]) for k in weights[0] if k.endswith("weight"))


def test_grid_reuses_one_dense_model(cfg_factory):
    first = run_cell(cfg_factory("pruning=magnitude_global", "pruning.sparsity=0.5"))
    second = run_cell(cfg_factory("pruning=random", "pruning.sparsity=0.9"))
    assert first.metrics["cache/dense_hit"] == 0.0 and second.metrics["cache/dense_hit"] == 1.0
    assert first.metrics["dense/acc"] == second.metrics["dense/acc"]
