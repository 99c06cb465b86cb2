"""One grid cell: validate -> (skip if finished) -> data -> dense -> prune + fine-tune -> measure -> attack -> log."""
from __future__ import annotations

import logging
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import mlflow
import pandas as pd
import torch
from filelock import FileLock
from mlflow.entities import Metric
from omegaconf import DictConfig, OmegaConf

from attacks import build_threat
from benchmark import hashing, measure, stages, tracking
from benchmark.allocator import keep_freed_memory
from benchmark.artifacts import PREDICTIONS_ARTIFACT
from benchmark.cache import ModelCache
from benchmark.data import cell_data, image_ids, seeded_indices
from benchmark.dense_memo import memoised
from benchmark.evaluation import evaluate
from benchmark.pruning import amount_key, run_label
from benchmark.pruning.common import achieved_sparsity, layer_weight_counts
from benchmark.tracking_store import redact, tracking_uri_of
from benchmark.training import (accuracy_and_loss, device_report, logits_accuracy_and_loss, predict,
                                resolve_device)
from benchmark.validate import check_config, validate

log = logging.getLogger("benchmark")


@dataclass
class CellResult:
    status: str  # "finished" | "skipped" | "failed"
    cell_hash: str
    run_name: str
    run_id: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    error: str | None = None


def run_name(cfg: DictConfig) -> str:
    """Reads like the cell: `seed_cnn|magnitude_global|s=0.9|pgd|seed=0`, the method followed by its
    non-default variants (`+layerwise`, `+iterative3`, `+reinit`, `+advft`) and the model by its adversarial training
    (`seed_cnn+pgd_at`), so the UI's run list tells them apart; a method whose amount is not a sparsity names its
    own key (`seed_cnn|threshold|rate=0.5|...`)."""
    pruning = cfg.pruning
    method = pruning.method + run_label(pruning)
    if cfg.finetune.adversarial:
        method += "+advft"
    model = cfg.model.get("arch") or _class_name(cfg.model.get("_target_") or cfg.model.get("module_class")) \
        or cfg.model.name
    if cfg.train.adversarial != "none":  # the dense model's training: pgd-at or trades
        model += "+" + {"pgd": "pgd_at", "trades": "trades"}[cfg.train.adversarial]
    key = amount_key(pruning)
    amount = f"s={pruning.sparsity:g}" if key is None else f"{key}={pruning[key]:g}"
    return f"{model}|{method}|{amount}|{cfg.threat.name}|seed={cfg.seed}"


def _class_name(import_path: str | None) -> str | None:
    """`Net` for `pkg.nets.Net`: how a model by import path (`custom`) or a module object (`instance`) is named."""
    return import_path.rsplit(".", 1)[-1] if import_path else None


def prepare(cfg: DictConfig) -> tuple[str, str]:
    """Everything that must hold before compute: the schema (so that hashing.canonicalize reads well-formed keys),
    the canonical form, every other check, the cell's identity."""
    check_config(cfg)
    notes = hashing.canonicalize(cfg)
    validate(cfg)
    for note in notes:
        log.info(note)
    return hashing.cell_hash(cfg), run_name(cfg)


class Unrecorded:
    """Where a cell computed without an MLflow run (`run_cell(..., logged=False)`) sends its tags, figures, dicts,
    tables and files: nowhere. The same names as mlflow's logging functions."""

    def set_tags(self, tags: dict) -> None:
        pass

    def log_figure(self, figure, artifact_file: str) -> None:
        pass

    def log_dict(self, dictionary, artifact_file: str) -> None:
        pass

    def log_table(self, data, artifact_file: str) -> None:
        pass

    def log_artifact(self, local_path: str, artifact_path: str | None = None) -> None:
        pass


def run_cell(cfg: DictConfig, progress: str = "", logged: bool = True) -> CellResult:
    """The cell: logged as one MLflow run (skipped when a FINISHED run of it exists), or with `logged=False`
    computed without any run (the caches are used and filled alike)."""
    started = time.perf_counter()
    cell_hash, name = prepare(cfg)
    results = Path(cfg.results_dir).resolve()
    # Parallel workers handed the same cell (e.g. `pruning=none` at every swept sparsity) run it once: the second
    # waits, then finds it FINISHED and skips it. The OS releases the lock if its holder is killed.
    lock = tracking.cell_lock_path(results, cell_hash)
    lock.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(lock):
        if not logged:
            return _unlogged_cell(cfg, started, cell_hash, name, results)
        return _run_cell(cfg, progress, started, cell_hash, name, results)


def _start(cfg: DictConfig):
    """The cell's device and threat, with the thread count it asks for and an allocator that keeps freed memory."""
    keep_freed_memory()
    if cfg.get("torch_threads"):  # e.g. several submitit_local jobs on one machine: avoid oversubscribing cores
        torch.set_num_threads(int(cfg.torch_threads))
    device = resolve_device(cfg.device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    return device, build_threat(cfg.threat)


def _finish(metrics: dict[str, float], device, started: float) -> dict[str, str]:
    """The device's report and the cell's timers added to `metrics`; the device's tags returned."""
    device_tags, device_metrics = device_report(device)  # GPU name and peak memory, on CUDA only
    metrics.update(device_metrics)
    metrics["time/cell_s"] = time.perf_counter() - started
    metrics["time/bookkeeping_s"] = metrics["time/cell_s"] - sum(
        v for k, v in metrics.items() if k in _COMPUTE_TIMERS)
    return device_tags


def _unlogged_cell(cfg: DictConfig, started: float, cell_hash: str, name: str, results: Path) -> CellResult:
    log.info("%s (cell %s), not logged", name, cell_hash)
    device, threat = _start(cfg)
    metrics, _ = _compute(cfg, threat, device, results, cell_hash, record=Unrecorded())
    _finish(metrics, device, started)
    return CellResult("finished", cell_hash, name, None, metrics)


def _run_cell(cfg: DictConfig, progress: str, started: float, cell_hash: str, name: str, results: Path) -> CellResult:
    experiment_id = tracking.setup_experiment(
        tracking_uri_of(cfg), cfg.experiment_name, results / "mlartifacts")
    finished = None if cfg.force else tracking.find_finished_run(experiment_id, cell_hash)
    if finished:
        log.info("%s %s: already finished (run %s, cell %s), skipped; force=true recomputes it",
                 progress, name, finished, cell_hash)
        return CellResult("skipped", cell_hash, name, finished)

    log.info("%s %s (cell %s)", progress, name, cell_hash)
    device, threat = _start(cfg)
    tags = {"cell_hash": cell_hash, "device": str(device), "device_type": device.type, **tracking.provenance_tags(),
            **threat.tags(cfg.model.name),
            **{f"plugin.{package}": version for package, version in hashing.plugin_versions(cfg).items()}}
    with tracking.cell_run(experiment_id, name, tags, os.environ.get(tracking.PARENT_RUN_ENV)) as run:
        mlflow.log_params(tracking.flatten(hashing.cell_identity(cfg)))
        mlflow.log_text(redact(OmegaConf.to_yaml(cfg, resolve=True)), "config.yaml")  # no credentials in artifacts
        metrics, curves = _compute(cfg, threat, device, results, cell_hash)
        mlflow.set_tags(_finish(metrics, device, started))
        mlflow.log_metrics(metrics)
        mlflow.MlflowClient().log_batch(run.info.run_id, metrics=[
            Metric(key, value, int(time.time() * 1000), step) for key, value, step in curves])
    log.info("%s %s finished in %.1fs: clean/acc=%.3f sparsity=%.3f", progress, name, metrics["time/cell_s"],
             metrics["clean/acc"], metrics["sparsity/achieved"])
    return CellResult("finished", cell_hash, name, run.info.run_id, metrics)


_COMPUTE_TIMERS = {"time/data_s", "time/train_s", "time/prune_s", "time/finetune_s", "time/measure_s", "time/threat_s",
                   "time/security_s"}


def _compute(cfg, threat, device, results: Path, cell_hash: str, record=mlflow):
    """The cell's metrics and curves; its tags, figures and artifacts go to `record` (the active MLflow run, or
    an `Unrecorded`)."""
    cache, use_cache = ModelCache(results / "cache"), not cfg.force
    metrics: dict[str, float] = {"sparsity/target": float(cfg.pruning.sparsity)}

    t = time.perf_counter()
    data = cell_data(cfg)  # the training split without the defender split
    plan = threat.plan(data, device, cfg.seed)
    sets = plan.sets
    metrics["time/data_s"] = time.perf_counter() - t
    metrics["data/train_n"], metrics["data/defender_n"] = float(len(data.y_train)), float(len(data.y_defender))
    if record is mlflow:
        tracking.log_datasets(cfg.dataset.name, data, sets.dense)

    dense_key = hashing.dense_key(cfg, plan.dense_data_key)
    dense, dense_meta = stages.dense_model(cfg, sets.dense, dense_key, cache, device, use_cache)
    metrics["time/train_s"] = 0.0 if dense_meta["cache_hit"] else dense_meta["train_s"]
    metrics["cache/dense_hit"] = float(dense_meta["cache_hit"])

    pruned_key = hashing.pruned_key(dense_key, cfg, plan.finetune_data_key)
    model, meta = stages.pruned_model(cfg, dense, sets, pruned_key, cache, device, use_cache, track=plan.tracker)
    metrics["time/prune_s"] = 0.0 if meta["cache_hit"] else meta["prune_s"]
    metrics["time/finetune_s"] = 0.0 if meta["cache_hit"] else meta["finetune_s"]
    metrics["cache/pruned_hit"] = float(meta["cache_hit"])
    metrics.update(meta["info"])
    metrics.update(before_finetune(meta))
    record.set_tags({"dense_key": dense_key, "pruned_key": pruned_key, "structured": str(meta["structured"]).lower(),
                     # cache entries record the commit that computed them; "unknown" for entries without it
                     "produced_by_commit": meta.get("produced_by_commit", "unknown"),
                     "produced_by_commit.dense": dense_meta.get("produced_by_commit", "unknown"),
                     **sets.roles(data),
                     "torch_threads.dense": str(dense_meta.get("torch_threads", "unknown")),
                     "torch_threads.finetune": str(meta.get("torch_threads", "unknown"))})

    t = time.perf_counter()
    measured, per_layer_sparsity, predictions = _measure(cfg, dense, model, data, sets.dense, device)
    metrics.update(measured)
    metrics["time/measure_s"] = time.perf_counter() - t

    # security properties and the threat's report, shared by the cells whose models have these weights
    evaluation, evaluation_key = evaluate(cfg, threat, dense, model, data, device, cache, use_cache)
    metrics.update(evaluation.metrics)
    metrics["cache/evaluation_hit"] = float(evaluation.cache_hit)
    metrics["time/security_s"] = evaluation.security_s
    record.set_tags({"evaluation_key": evaluation_key, "torch_threads.eval": str(evaluation.torch_threads),
                     "produced_by_commit.evaluation": evaluation.produced_by_commit})
    for artifact, content in evaluation.figures.items():
        log_file(record, content, artifact)
    for artifact, content in evaluation.artifacts.items():
        record.log_dict(content, artifact)

    t = time.perf_counter()
    metrics.update(plan.report.metrics)
    if plan.wants_clean_reference:  # the clean model at this method and sparsity (the evasion cell's, cached)
        reference = stages.clean_reference_model(cfg, data, cache, device, use_cache)
        metrics.update(threat.reference_metrics(reference, metrics, data, device, cfg.seed))

    def dense_for(data_key):  # this cell's dense model trained on the clean set (None) or the poisoned set
        if data_key == plan.dense_data_key:
            return dense
        return stages.dense_model(cfg, plan.poisoned if data_key else data, hashing.dense_key(cfg, data_key), cache,
                                  device, use_cache)[0]

    metrics.update(threat.effectiveness(dense_for, data, device, cfg.seed))  # threat/dense_success, threat/effective
    for artifact, figure in plan.report.figures.items():
        record.log_figure(figure, artifact)
    metrics["time/threat_s"] = evaluation.threat_s + time.perf_counter() - t

    curves = [("finetune/loss", loss, epoch) for epoch, loss in enumerate(meta["epoch_losses"], start=1)]
    curves += evaluation.curves
    curves += [(f"finetune/{name}", value, step)  # step 0: just pruned; step e: after fine-tune epoch e
               for step, tracked in enumerate(meta.get("tracked", [])) for name, value in tracked.items()]
    record.log_dict(per_layer_sparsity, "sparsity_per_layer.json")
    record.log_table(predictions, PREDICTIONS_ARTIFACT)
    record.log_artifact(str(cache.root / "pruned" / f"{pruned_key}.safetensors"), "model")
    return metrics, curves


def log_file(record, content: bytes, artifact_file: str) -> None:
    """`content` logged to `record` as the file `artifact_file` (its folder part becomes the artifact folder)."""
    path = PurePosixPath(artifact_file)
    with tempfile.TemporaryDirectory() as folder:
        local = Path(folder) / path.name
        local.write_bytes(content)
        record.log_artifact(str(local), None if str(path.parent) == "." else str(path.parent))


def before_finetune(meta: dict) -> dict[str, float]:
    """The threat's numbers right after pruning, before any fine-tune (`<metric>_pruned`, e.g. backdoor/asr_pruned,
    clean/acc_pruned), from the pruned model's tracked metrics; {} when the cell tracks nothing."""
    tracked = meta.get("tracked") or [{}]
    return {f"{name}_pruned": value for name, value in tracked[0].items()}


def _measure(cfg, dense, model, data, dense_train, device) -> tuple[dict[str, float], dict[str, float], pd.DataFrame]:
    """Sparsity, cost, accuracy and what the pruned model forgets of its dense parent (forget/*, and the per-image
    predictions behind it: measure.prediction_table). train/acc and the generalisation gap use the clean training
    images (the same seeded subset in every cell); under a data threat train/acc_dense_set is the accuracy on the
    (poisoned) labels the dense model was trained on."""
    prune_head = cfg.pruning.prune_head
    achieved, per_layer = achieved_sparsity(layer_weight_counts(dense, prune_head), model, prune_head)
    dense_params = sum(p.numel() for p in dense.parameters())
    example = data.x_test[:1].to(device)
    macs_dense, _ = measure.macs_and_params(dense, example)
    macs, _ = measure.macs_and_params(model, example)
    logits = predict(model, data.x_test, device)
    dense_logits = memoised("logits", dense, {"x": data.x_test}, {"device": str(device)},
                            lambda: predict(dense, data.x_test, device))
    test_acc, test_loss = logits_accuracy_and_loss(logits, data.y_test)
    subset = seeded_indices(len(data.y_train), cfg.eval.train_subset, cfg.seed)
    train_acc, train_loss = accuracy_and_loss(model, data.x_train[subset], data.y_train[subset], device)
    dense_acc, _ = logits_accuracy_and_loss(dense_logits, data.y_test)
    dense_pred, pred = dense_logits.argmax(1), logits.argmax(1)
    extra = measure.forgetting_metrics(dense_pred, pred, data.y_test)
    predictions = measure.prediction_table(image_ids(data.x_test), data.y_test, dense_pred, pred)
    if dense_train is not data:
        extra["train/acc_dense_set"], _ = accuracy_and_loss(
            model, dense_train.x_train[subset], dense_train.y_train[subset], device)
    return {
        "clean/acc": test_acc, "clean/loss": test_loss, "train/acc": train_acc, "train/loss": train_loss,
        "gap/acc": train_acc - test_acc, "gap/loss": test_loss - train_loss, "dense/acc": dense_acc, **extra,
        **measure.collapse_metrics(test_acc, data.y_test, cfg.eval.collapse_margin),
        "sparsity/achieved": achieved,
        "sparsity/overall": 1.0 - measure.nonzero_parameters(model) / dense_params,
        "cost/params": float(measure.nonzero_parameters(model)), "cost/params_dense": float(dense_params),
        "cost/macs": float(macs), "cost/macs_dense": float(macs_dense),
        **measure.cost_metrics(dense, model, data.x_test, cfg.eval.latency),  # latency, speed-up, compressed size
    }, per_layer, predictions
