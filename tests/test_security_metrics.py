"""Known-answer tests for the per-cell security properties: calibration (ECE, NLL), common corruptions,
attribution agreement and deletion faithfulness, and their logging by one real cell."""
from __future__ import annotations

import copy
import math

import mlflow
import pytest
import torch
import torch.nn as nn

from benchmark import calibration, corruptions, interpretability
from benchmark.cell import run_cell
from benchmark.training import predict
from benchmark.validate import ConfigError, validate
from models import build_model

CPU = torch.device("cpu")


class _ConstantConfidence(nn.Module):
    """Keeps `model`'s predicted class but reports probability `c` for it (the rest spread evenly)."""

    def __init__(self, model: nn.Module, c: float, classes: int = 10):
        super().__init__()
        self.model, self.c, self.classes = model, c, classes

    def forward(self, x):
        predicted = self.model(x).argmax(1)
        probs = torch.full((len(x), self.classes), (1 - self.c) / (self.classes - 1))
        probs[torch.arange(len(x)), predicted] = self.c
        return probs.log()


@pytest.mark.parametrize("c", [0.3, 0.75, 0.99])
def test_ece_of_constant_confidence_is_confidence_minus_accuracy(trained_seed_cnn, digits, c):
    model = _ConstantConfidence(trained_seed_cnn, c)
    logits = predict(model, digits.x_test, CPU)
    acc = float((logits.argmax(1) == digits.y_test).float().mean())
    m = calibration.calibration_metrics(logits, digits.y_test, bins=15)
    assert m["calib/ece"] == pytest.approx(abs(c - acc), abs=1e-5)  # float32 softmax round trip
    assert m["calib/mean_confidence"] == pytest.approx(c, abs=1e-6)
    assert m["calib/nll"] == pytest.approx(-(acc * math.log(c) + (1 - acc) * math.log((1 - c) / 9)), abs=1e-5)


def test_ece_weights_bins_by_their_share():
    # two bins: 3 samples at confidence 0.95 (2 right), 1 sample at 0.55 (right): (3*|2/3-0.95| + 1*|1-0.55|)/4
    probs = torch.tensor([[0.95, 0.05], [0.95, 0.05], [0.95, 0.05], [0.55, 0.45]])
    y = torch.tensor([0, 0, 1, 0])
    expected = (3 * abs(2 / 3 - 0.95) + abs(1 - 0.55)) / 4
    assert calibration.expected_calibration_error(probs, y, bins=15) == pytest.approx(expected)


def _corruption_cfg(cfg_factory):
    return cfg_factory().eval.corruptions


def test_corruption_severity_zero_is_clean_and_noise_hurts_more_with_severity(trained_seed_cnn, digits, cfg_factory):
    cfg = _corruption_cfg(cfg_factory)
    for name in corruptions.CORRUPTIONS:
        assert torch.equal(corruptions.corrupt(digits.x_test, name, 0, cfg[name], seed=0), digits.x_test)
    metrics, curves = corruptions.corruption_metrics(trained_seed_cnn, digits.x_test, digits.y_test, CPU, cfg, seed=0)
    clean = float((predict(trained_seed_cnn, digits.x_test, CPU).argmax(1) == digits.y_test).float().mean())
    assert metrics["corruption/clean_acc"] == pytest.approx(clean)
    for name in corruptions.CORRUPTIONS:
        curve = [value for n, value, _ in curves if n == f"corruption_curve/{name}"]
        assert curve[0] == pytest.approx(clean) and len(curve) == 4  # step 0 = severity 0 = clean
    noise = [metrics[f"corruption/gaussian_noise/sev_{k}"] for k in (1, 2, 3)]
    assert noise[2] < clean - 0.05 and noise[2] <= noise[0]
    assert metrics["corruption/mean"] == pytest.approx(
        sum(v for k, v in metrics.items() if "/sev_" in k) / 9)


def test_corruptions_are_seeded_and_leave_the_global_rng_alone(digits, cfg_factory):
    cfg = _corruption_cfg(cfg_factory)
    state = torch.random.get_rng_state()
    a = corruptions.corrupt(digits.x_test, "gaussian_noise", 2, cfg.gaussian_noise, seed=0)
    b = corruptions.corrupt(digits.x_test, "gaussian_noise", 2, cfg.gaussian_noise, seed=0)
    c = corruptions.corrupt(digits.x_test, "gaussian_noise", 2, cfg.gaussian_noise, seed=1)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert a.min() >= 0 and a.max() <= 1
    blurred = corruptions.corrupt(digits.x_test, "gaussian_blur", 3, cfg.gaussian_blur, seed=0)
    assert blurred.shape == digits.x_test.shape and blurred.std() < digits.x_test.std()


def _interpret_cfg(cfg_factory, *overrides):
    return cfg_factory("eval.interpret.subset=16", *overrides).eval.interpret


def test_attribution_agreement_of_a_model_with_itself_is_one(trained_seed_cnn, digits, cfg_factory):
    cfg = _interpret_cfg(cfg_factory)
    metrics, curves, _ = interpretability.compare(trained_seed_cnn, copy.deepcopy(trained_seed_cnn), digits.x_test,
                                                  digits.y_test, CPU, cfg, seed=0)
    for method in interpretability.METHODS:
        assert metrics[f"interpret/{method}/spearman"] == pytest.approx(1.0)
        assert metrics[f"interpret/{method}/topk_overlap"] == 1.0
        assert metrics[f"interpret/{method}/deletion_auc"] == metrics[f"interpret/{method}/deletion_auc_dense"]


def test_attribution_agreement_with_an_untrained_model_is_low(trained_seed_cnn, digits, cfg_factory):
    cfg = _interpret_cfg(cfg_factory, "eval.interpret.methods=[saliency]")
    torch.manual_seed(1)
    other = build_model("seed_cnn", 1, 16, 10)
    metrics, _, _ = interpretability.compare(trained_seed_cnn, other, digits.x_test, digits.y_test, CPU, cfg, seed=0)
    assert metrics["interpret/saliency/spearman"] < 0.8
    assert metrics["interpret/saliency/topk_overlap"] < 0.6


def test_deletion_curve_starts_at_clean_accuracy_and_ends_at_the_blank_image(trained_seed_cnn, digits, cfg_factory):
    cfg = _interpret_cfg(cfg_factory)
    x, y = interpretability.interpret_subset(digits.x_test, digits.y_test, 16, seed=0)
    maps = interpretability.attribution_maps(trained_seed_cnn, x, y, "saliency", cfg, CPU)
    curve = interpretability.deletion_curve(trained_seed_cnn, x, y, maps, 10, 0.0, CPU)
    logits = predict(trained_seed_cnn, x, CPU)
    blank = predict(trained_seed_cnn, torch.zeros_like(x), CPU)
    assert curve[0] == pytest.approx(float((logits.argmax(1) == y).float().mean()))
    assert curve[-1] == pytest.approx(float((blank.argmax(1) == y).float().mean()))
    # the most-attributed 30% of pixels carry the decision: removing them hurts more than removing random pixels
    random_maps = torch.rand(maps.shape, generator=torch.Generator().manual_seed(0))
    random_curve = interpretability.deletion_curve(trained_seed_cnn, x, y, random_maps, 10, 0.0, CPU)
    assert curve[3] < random_curve[3]


def test_eval_config_errors_name_the_key(cfg_factory):
    with pytest.raises(ConfigError, match="eval.interpret.methods"):
        validate(cfg_factory("eval.interpret.methods=[gradcam]"))
    with pytest.raises(ConfigError, match="eval.corruptions.contrast"):
        validate(cfg_factory("eval.corruptions.contrast=[1.5]"))
    with pytest.raises(ConfigError, match="eval.calib_bins"):
        validate(cfg_factory("eval.calib_bins=0"))


def test_a_cell_logs_calibration_corruption_and_interpretability(cfg_factory):
    cfg = cfg_factory("pruning=magnitude_global", "pruning.sparsity=0.7", "threat=pgd", "threat.subset=20",
                      "dataset.eps=[0.1]", "eval.interpret.subset=8")
    result = run_cell(cfg)
    assert result.status == "finished"
    m = result.metrics
    for key in ("calib/ece", "calib/nll", "corruption/mean", "corruption/gaussian_blur/sev_3",
                "interpret/saliency/spearman", "interpret/integrated_gradients/topk_overlap",
                "interpret/saliency/deletion_auc"):
        assert key in m, key
    assert m["calib/nll"] == pytest.approx(m["clean/loss"], rel=1e-4)  # same cross-entropy, same test split
    assert 0 <= m["calib/ece"] <= 1 and 0 < m["interpret/saliency/spearman"] <= 1
    assert m["time/security_s"] < 1.5 * m["time/train_s"]  # cheap beside the 8 epochs of dense training
    client = mlflow.MlflowClient()
    assert [a.path for a in client.list_artifacts(result.run_id, "interpret")] == ["interpret/attributions.png"]
    steps = [h.step for h in client.get_metric_history(result.run_id, "corruption_curve/contrast")]
    assert sorted(steps) == [0, 1, 2, 3]
