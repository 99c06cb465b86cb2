"""A model's evaluation is computed once per content: cells whose models have the same weights share it, and a
shared evaluation logs exactly what computing it again logs."""
from __future__ import annotations

import json
import math

import mlflow
import torch

from benchmark import hashing
from benchmark.cache import ModelCache
from benchmark.cell import run_cell
from benchmark.evaluation import KIND

# the tiny cell with its optional evaluations on, so that figures and curves are shared too
EVALUATED = ("threat=evasion", "threat.subset=60", "eval.interpret.subset=8", "eval.corruptions.subset=60")


def _numbers(metrics: dict) -> dict:
    """What the evaluation computed (its wall-clock timers and the cache flags differ by construction)."""
    return {k: v for k, v in metrics.items() if not k.startswith(("time/", "cache/", "cost/latency", "cost/speedup"))}


def _artifact(run_id: str, path: str) -> bytes:
    local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path)
    with open(local, "rb") as f:
        return f.read()


def _pruned_weights(results, run_id: str) -> dict[str, torch.Tensor]:
    key = mlflow.get_run(run_id).data.tags["pruned_key"]
    return ModelCache(results / "cache").load("pruned", key)[0]


def test_cells_with_the_same_weights_share_one_evaluation_that_logs_what_a_fresh_one_does(cfg_factory, tmp_path):
    first = run_cell(cfg_factory("pruning=magnitude_global", "pruning.sparsity=0", *EVALUATED))
    second = run_cell(cfg_factory("pruning=random", "pruning.sparsity=0", *EVALUATED))
    other = run_cell(cfg_factory("pruning=random", "pruning.sparsity=0.5", *EVALUATED))
    # at sparsity 0 both methods prune nothing and fine-tune alike: the premise of sharing
    a, b = _pruned_weights(tmp_path, first.run_id), _pruned_weights(tmp_path, second.run_id)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (first.metrics["cache/evaluation_hit"], second.metrics["cache/evaluation_hit"],
            other.metrics["cache/evaluation_hit"]) == (0.0, 1.0, 0.0)
    tags = [mlflow.get_run(r.run_id).data.tags for r in (first, second, other)]
    assert tags[0]["evaluation_key"] == tags[1]["evaluation_key"] != tags[2]["evaluation_key"]
    assert len(list((tmp_path / "cache" / KIND).glob("*.json"))) == 2

    # the shared evaluation logs the computing cell's numbers, curves and files; its own attack time is zero
    assert _numbers(second.metrics) == _numbers(first.metrics)
    assert second.metrics["time/attack_pgd_linf_s"] == 0.0 < first.metrics["time/attack_pgd_linf_s"]
    assert second.metrics["time/security_s"] == 0.0 < first.metrics["time/security_s"]
    client = mlflow.MlflowClient()
    for key in ("robust_curve/pgd_linf", "interpret_deletion/saliency"):
        curves = [[(m.step, m.value) for m in client.get_metric_history(r.run_id, key)] for r in (first, second)]
        assert curves[0] and sorted(curves[0]) == sorted(curves[1])
    for path in ("evasion/per_image.json", "interpret/attributions.png"):
        assert _artifact(second.run_id, path) == _artifact(first.run_id, path)

    # the same cell computed in a store without the evaluation: the same numbers and per-image verdicts
    shared = json.loads(_artifact(second.run_id, "evasion/per_image.json"))
    fresh = run_cell(cfg_factory("pruning=random", "pruning.sparsity=0", *EVALUATED, f"results_dir={tmp_path}/fresh"))
    assert fresh.metrics["cache/evaluation_hit"] == 0.0
    assert _numbers(fresh.metrics) == _numbers(second.metrics)
    assert json.loads(_artifact(fresh.run_id, "evasion/per_image.json")) == shared


def test_force_recomputes_a_shared_evaluation(cfg_factory):
    run_cell(cfg_factory("pruning=magnitude_global", "pruning.sparsity=0"))
    forced = run_cell(cfg_factory("pruning=random", "pruning.sparsity=0", "force=true"))
    assert forced.metrics["cache/evaluation_hit"] == 0.0 and forced.metrics["time/attack_pgd_linf_s"] > 0


def test_evaluation_key_holds_the_weights_not_how_they_came_about(cfg_factory):
    key = lambda *overrides, w="a", d="d": hashing.evaluation_key(cfg_factory(*overrides), w, d)  # noqa: E731
    base = key()
    # what only shapes the weights: the weights stand for it
    assert key("pruning=random") == key("pruning.sparsity=0.9") == key("finetune.epochs=3") == \
        key("train.epochs=2") == base
    # what the evaluation reads
    changed = [key(w="b"), key(d="e"), key("seed=1"), key("threat.subset=50"), key("eval.calib_bins=10"),
               key("model=lenet300"), key("device=cuda")]
    assert len({base, *changed}) == len(changed) + 1


def test_a_corrupted_evaluation_record_is_deleted_not_trusted(tmp_path):
    cache = ModelCache(tmp_path)
    record = {"metrics": {"a": 0.25, "nan": float("nan"), "inf": float("inf"), "np": torch.tensor(0.5).numpy()[()]}}
    path = cache.save_record(KIND, "k", record)
    loaded = cache.load_record(KIND, "k")
    assert loaded["metrics"]["a"] == 0.25 and loaded["metrics"]["np"] == 0.5
    assert math.isnan(loaded["metrics"]["nan"]) and loaded["metrics"]["inf"] == math.inf
    path.write_bytes(path.read_bytes().replace(b"0.25", b"0.35"))
    assert cache.load_record(KIND, "k") is None and not path.exists()


def test_dense_side_results_are_kept_by_content_and_never_served_for_another_model_or_input():
    from benchmark.dense_memo import memoised

    calls = []

    def compute():
        calls.append(1)
        return len(calls)

    model, x = torch.nn.Linear(4, 3), torch.rand(8, 4)
    assert memoised("logits", model, {"x": x}, {"device": "cpu"}, compute) == 1
    assert memoised("logits", model, {"x": x.clone()}, {"device": "cpu"}, compute) == 1  # same content: kept
    changed = torch.nn.Linear(4, 3)
    changed.load_state_dict(model.state_dict())
    with torch.no_grad():
        changed.weight[0, 0] += 1
    assert memoised("logits", changed, {"x": x}, {"device": "cpu"}, compute) == 2
    assert memoised("logits", model, {"x": x[:4]}, {"device": "cpu"}, compute) == 3
    assert memoised("logits", model, {"x": x}, {"device": "cuda"}, compute) == 4
    assert memoised("attributions", model, {"x": x}, {"device": "cpu"}, compute) == 5
