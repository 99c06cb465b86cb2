"""One cell end to end: reproducible, skipped once finished, and a grid's cells share their dense model."""
from __future__ import annotations

import pytest
import torch

from benchmark.cache import ModelCache
from benchmark.cell import run_cell


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
