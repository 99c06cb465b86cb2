"""The non-adversarial security properties every cell logs: calibration, common corruptions, interpretability.

One call from the cell (benchmark/cell.py); each part is cheap on seed_cnn/mnist5k and the two optional ones
are switched by `eval.corruptions.enabled` / `eval.interpret.enabled`.
"""
from __future__ import annotations

import time

from benchmark import calibration, corruptions, interpretability


def check_config(eval_cfg) -> None:
    """The `eval` block's checks (called by benchmark/validate.py before any compute)."""
    from benchmark.validate import ConfigError, _range

    _range("eval.calib_bins", eval_cfg.calib_bins, 1, 10_000)
    block = eval_cfg.corruptions
    if block.get("subset") is not None:
        _range("eval.corruptions.subset", block.subset, 1, 10_000_000)
    unknown = set(block) - {"enabled", "subset", *corruptions.CORRUPTIONS}
    if unknown:
        raise ConfigError(f"eval.corruptions.{sorted(unknown)[0]} is unknown; allowed: "
                          f"enabled, subset, {', '.join(corruptions.CORRUPTIONS)}")
    for name in corruptions.CORRUPTIONS:
        high = 1.0 if name == "contrast" else 100.0
        for i, value in enumerate(block.get(name) or []):
            _range(f"eval.corruptions.{name}[{i}]", value, 1e-9 if name != "gaussian_noise" else 0.0, high)
    block = eval_cfg.interpret
    _range("eval.interpret.subset", block.subset, 1, 100_000)
    for i, method in enumerate(block.methods):
        if method not in interpretability.METHODS:
            raise ConfigError(f"eval.interpret.methods[{i}]={method!r} is unknown; "
                              f"allowed: {list(interpretability.METHODS)}")
    _range("eval.interpret.ig_steps", block.ig_steps, 1, 10_000)
    _range("eval.interpret.topk", block.topk, 1e-9, 1.0)
    _range("eval.interpret.deletion_steps", block.deletion_steps, 1, 10_000)
    _range("eval.interpret.figure_images", block.figure_images, 0, 64)


def security_properties(eval_cfg, dense, model, data, device, seed: int):
    """(metrics, curves, figures) of the pruned `model` (and its `dense` parent for attribution agreement)."""
    metrics: dict[str, float] = {}
    curves: list[tuple[str, float, int]] = []
    figures: dict[str, object] = {}

    t = time.perf_counter()
    logits = calibration.logits_of(model, data.x_test, device)
    metrics.update(calibration.calibration_metrics(logits, data.y_test, eval_cfg.calib_bins))
    metrics["time/calib_s"] = time.perf_counter() - t

    if eval_cfg.corruptions.enabled:
        t = time.perf_counter()
        measured, corruption_curves = corruptions.corruption_metrics(
            model, data.x_test, data.y_test, device, eval_cfg.corruptions, seed)
        metrics.update(measured)
        curves += corruption_curves
        metrics["time/corruption_s"] = time.perf_counter() - t

    if eval_cfg.interpret.enabled:
        t = time.perf_counter()
        measured, interpret_curves, (x, _, maps) = interpretability.compare(
            dense, model, data.x_test, data.y_test, device, eval_cfg.interpret, seed)
        metrics.update(measured)
        curves += interpret_curves
        if eval_cfg.interpret.figure_images > 0:
            figures["interpret/attributions.png"] = interpretability.attribution_figure(
                x, maps, eval_cfg.interpret.figure_images)
        metrics["time/interpret_s"] = time.perf_counter() - t
    return metrics, curves, figures
