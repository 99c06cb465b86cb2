"""Content hashes that identify a cell and the artifacts it can share with other cells.

Key chain (see README): dense = H(dataset, model, train, seed, training-data threat part);
pruned = H(dense, pruning, finetune); cell = H(resolved config minus run-only keys).
"""
from __future__ import annotations

import hashlib
import json

from omegaconf import DictConfig, OmegaConf

# Keys that change where or how a cell runs, not what it computes.
RUN_ONLY_KEYS = {"device", "force", "tracking_uri", "results_dir", "experiment_name", "hydra", "torch_threads"}
# Dataset keys that do not change the data itself.
DATASET_RUN_ONLY_KEYS = {"data_root", "download", "eps", "eps_l2"}


def stable_hash(obj) -> str:
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def resolved(cfg: DictConfig) -> dict:
    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)


def _data_identity(dataset: dict) -> dict:
    return {k: v for k, v in dataset.items() if k not in DATASET_RUN_ONLY_KEYS}


def cell_identity(cfg: DictConfig) -> dict:
    plain = {k: v for k, v in resolved(cfg).items() if k not in RUN_ONLY_KEYS}
    plain["dataset"] = _data_identity(plain["dataset"])
    return plain


def cell_hash(cfg: DictConfig) -> str:
    return stable_hash(cell_identity(cfg))


def dense_key(cfg: DictConfig, training_data_key: dict | None) -> str:
    plain = resolved(cfg)
    return stable_hash(
        {
            "dataset": _data_identity(plain["dataset"]),
            "model": plain["model"],
            "train": plain["train"],
            "seed": plain["seed"],
            "training_data": training_data_key,
        }
    )


def pruned_key(dense: str, cfg: DictConfig, finetune_data_key: dict | None = None) -> str:
    plain = resolved(cfg)
    return stable_hash({"dense": dense, "pruning": plain["pruning"], "finetune": plain["finetune"], "finetune_data": finetune_data_key})
