"""The non-adversarial security properties every cell logs: calibration, common corruptions, interpretability.

One call from the cell (benchmark/cell.py); each part is cheap on seed_cnn/mnist5k and the two optional ones
are switched by `eval.corruptions.enabled` / `eval.interpret.enabled`.
"""
from __future__ import annotations

import time

from benchmark import calibration, corruptions, interpretability
from benchmark.training import predict


def security_properties(eval_cfg, dense, model, data, device, seed: int):
    """(metrics, curves, figures) of the pruned `model` (and its `dense` parent for attribution agreement)."""
    metrics: dict[str, float] = {}
    curves: list[tuple[str, float, int]] = []
    figures: dict[str, object] = {}

    t = time.perf_counter()
    logits = predict(model, data.x_test, device, batch_size=256)
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
