"""A finished model's evaluation, computed once per content: its security properties (benchmark/properties.py) and
its threat's report (attacks/), which depend on the model's weights and not on how the weights came about.

The cache keeps each evaluation under `hashing.evaluation_key` (the cell's identity without train, pruning and
finetune, with the weights of the model and of its dense parent instead), so the cells whose pruning and fine-tune
give identical weights evaluate them once and log the same numbers: every method of a grid at sparsity 0 prunes
nothing and fine-tunes alike. A cell that reuses an evaluation logs `cache/evaluation_hit` 1 and zero for the
evaluation's own timers (`time/attack_*_s`, `time/calib_s`, ...), as a cell that reuses a model logs zero training
time. Figures are kept as the image files the cell logs, artifacts as JSON.
"""
from __future__ import annotations

import base64
import io
import time
from dataclasses import dataclass
from pathlib import PurePosixPath

import torch

from benchmark import hashing
from benchmark.cache import ModelCache, tensors_sha256
from benchmark.properties import security_properties
from benchmark.version import producing_commit

KIND = "evaluation"  # the cache's folder of evaluations


@dataclass
class Evaluation:
    metrics: dict[str, float]
    curves: list[tuple[str, float, int]]  # (name, value, step), as MLflow logs them
    figures: dict[str, bytes]  # artifact file -> its bytes (the format its suffix names)
    artifacts: dict[str, dict]  # artifact file -> JSON-able dict
    security_s: float  # time spent on the properties and on the threat by this cell (0 for a reused evaluation)
    threat_s: float
    torch_threads: int  # the intra-op threads it was computed with
    produced_by_commit: str
    cache_hit: bool = False


def figure_bytes(figure, artifact_file: str) -> bytes:
    """The file MLflow's log_figure would write for `artifact_file` (its suffix picks the format)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format=PurePosixPath(artifact_file).suffix.lstrip(".") or "png")
    return buffer.getvalue()


def compute(cfg, threat, dense, model, data, device) -> Evaluation:
    """The security properties of `model` (against its `dense` parent) and its `threat`'s report, now."""
    started = time.perf_counter()
    metrics, curves, figures = security_properties(cfg.eval, dense, model, data, device, cfg.seed)
    security_s = time.perf_counter() - started
    started = time.perf_counter()
    report = threat.evaluate(model, data, device, cfg.seed)
    threat_s = time.perf_counter() - started
    return Evaluation(metrics={**metrics, **report.metrics}, curves=curves + report.curves,
                      figures={name: figure_bytes(fig, name) for name, fig in {**figures, **report.figures}.items()},
                      artifacts=report.artifacts, security_s=security_s, threat_s=threat_s,
                      torch_threads=torch.get_num_threads(), produced_by_commit=producing_commit())


def evaluate(cfg, threat, dense, model, data, device, cache: ModelCache, use_cache: bool = True
             ) -> tuple[Evaluation, str]:
    """(`model`'s evaluation, its key): from the cache, or computed now and cached (`use_cache=False` recomputes
    it). Parallel workers that reach one evaluation compute it once; the others wait."""
    key = hashing.evaluation_key(cfg, tensors_sha256(model.state_dict()), tensors_sha256(dense.state_dict()))
    with cache.lock(KIND, key):
        record = cache.load_record(KIND, key) if use_cache else None
        if record is not None:
            return reused(record), key
        evaluation = compute(cfg, threat, dense, model, data, device)
        cache.save_record(KIND, key, to_record(evaluation))
        return evaluation, key


def to_record(evaluation: Evaluation) -> dict:
    return {"metrics": evaluation.metrics, "curves": [list(curve) for curve in evaluation.curves],
            "figures": {name: base64.b64encode(data).decode("ascii") for name, data in evaluation.figures.items()},
            "artifacts": evaluation.artifacts, "security_s": evaluation.security_s, "threat_s": evaluation.threat_s,
            "torch_threads": evaluation.torch_threads, "produced_by_commit": evaluation.produced_by_commit}


def reused(record: dict) -> Evaluation:
    """A cached evaluation as the cell that reuses it logs it: its own timers zero."""
    metrics = {name: 0.0 if name.startswith("time/") else value for name, value in record["metrics"].items()}
    return Evaluation(metrics=metrics, curves=[(name, value, int(step)) for name, value, step in record["curves"]],
                      figures={name: base64.b64decode(data) for name, data in record["figures"].items()},
                      artifacts=record["artifacts"], security_s=0.0, threat_s=0.0,
                      torch_threads=int(record["torch_threads"]), produced_by_commit=record["produced_by_commit"],
                      cache_hit=True)
