"""Measurements that do not attack: parameters, MACs, CPU latency and size (sparsity: benchmark/pruning/common.py)."""
from __future__ import annotations

import pandas as pd
import torch
import torch.nn as nn
import torch_pruning as tp


def nonzero_parameters(model: nn.Module) -> int:
    return sum(int(torch.count_nonzero(p)) for p in model.parameters())


def macs_and_params(model: nn.Module, example_inputs: torch.Tensor) -> tuple[int, int]:
    """torch-pruning's counter (dense MACs: unstructured zeros are still multiplied by dense kernels)."""
    macs, params = tp.utils.count_ops_and_params(model, example_inputs)
    return int(macs), int(params)


def cpu_latency_ms(models: list[nn.Module], x: torch.Tensor, repeats: int, threads: int) -> list[float]:
    """Median wall time (ms) of one forward pass over the batch `x`, per model, on the CPU with `threads` torch
    threads, after two warm-up passes. The models are timed in turn within each repeat, so a busy machine slows
    them alike and their ratio (the speed-up) stays fair. CPU copies are timed whatever the cell's device; the
    thread count is fixed so that cells are comparable, and restored afterwards."""
    import copy
    import statistics
    import time

    models = [copy.deepcopy(m).cpu().eval() for m in models]
    x = x.cpu()
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    times: list[list[float]] = [[] for _ in models]
    try:
        with torch.inference_mode():
            for i in range(repeats + 2):
                for model, spent in zip(models, times):
                    started = time.perf_counter()
                    model(x)
                    if i >= 2:
                        spent.append((time.perf_counter() - started) * 1000)
    finally:
        torch.set_num_threads(previous)
    return [statistics.median(t) for t in times]


def compressed_size_kb(model: nn.Module) -> float:
    """Size on disk of the weights as the cache stores them (safetensors), gzip-compressed (level 6), in KiB:
    unstructured zeros compress, removed channels are simply absent."""
    import gzip

    from safetensors.torch import save

    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    return len(gzip.compress(save(tensors), compresslevel=6, mtime=0)) / 1024


def collapse_metrics(accuracy: float, labels: torch.Tensor, margin: float) -> dict[str, float]:
    """clean/chance: the accuracy of always predicting the most frequent class of `labels`; clean/collapsed: 1 when
    `accuracy` is at most chance + `margin` (a model at chance: its robust accuracy is not a robustness result)."""
    chance = int(torch.bincount(labels).max()) / len(labels)
    return {"clean/chance": chance, "clean/collapsed": float(accuracy <= chance + margin)}


def cost_metrics(dense: nn.Module, model: nn.Module, x: torch.Tensor, latency_cfg) -> dict[str, float]:
    """cost/latency_ms, cost/latency_ms_dense, cost/speedup (dense / pruned latency), cost/size_kb(_dense)."""
    batch = x[: int(latency_cfg.batch_size)]
    repeats, threads = int(latency_cfg.repeats), int(latency_cfg.threads)
    dense_ms, pruned_ms = cpu_latency_ms([dense, model], batch, repeats, threads)
    return {"cost/latency_ms": pruned_ms, "cost/latency_ms_dense": dense_ms, "cost/speedup": dense_ms / pruned_ms,
            "cost/size_kb": compressed_size_kb(model), "cost/size_kb_dense": compressed_size_kb(dense)}


def forgetting_metrics(dense_pred: torch.Tensor, pred: torch.Tensor, labels: torch.Tensor,
                       per_class_limit: int = 100) -> dict[str, float]:
    """What pruning makes a model forget (Hooker et al. 2019), from the predicted classes of the dense parent and
    of the pruned model on the same images: forget/flip_rate (share of images whose prediction changed),
    forget/class_acc_change/<k> (pruned minus dense accuracy on the images of class k; logged when there are at
    most `per_class_limit` classes) and forget/max_class_drop (the largest per-class accuracy drop, dense minus
    pruned; negative when every class gained)."""
    metrics = {"forget/flip_rate": float((pred != dense_pred).float().mean())}
    classes = labels.unique().tolist()
    changes = {}
    for k in classes:
        of_class = labels == k
        changes[k] = float((pred[of_class] == k).float().mean() - (dense_pred[of_class] == k).float().mean())
    if len(classes) <= per_class_limit:
        metrics.update({f"forget/class_acc_change/{k}": change for k, change in changes.items()})
    metrics["forget/max_class_drop"] = max(-change for change in changes.values())
    return metrics


def prediction_table(image_ids: list[str], labels: torch.Tensor, dense_pred: torch.Tensor,
                     pred: torch.Tensor) -> pd.DataFrame:
    """The benchmark.artifacts.PREDICTIONS_ARTIFACT of a cell: `image_id` (benchmark.data.image_ids), `label`, `dense_pred`, `pred`."""
    as_int = lambda t: t.detach().cpu().numpy().astype("int32")  # noqa: E731
    return pd.DataFrame({"image_id": image_ids, "label": as_int(labels), "dense_pred": as_int(dense_pred),
                         "pred": as_int(pred)})
