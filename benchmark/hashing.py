"""Content hashes that identify a cell and the artifacts it can share with other cells.

Key chain (docs/pipeline.md, "Hashing"): dense = H(code, device type, dataset, model, train, seed, defender split's
size, training-data threat part); pruned = H(code, device type, dense, pruning, finetune, fine-tune data);
cell = H(code, device type, resolved config minus run-only keys); evaluation = H(cell's identity minus the keys that
only shape the weights, the weights of the model and of its dense parent). `code` is benchmark.version.code_identity():
the results version and the versions of the libraries that compute numbers or data splits, so a change that alters
numbers makes every older cache entry and finished cell stale instead of silently reused. A cell that uses an
installed plugin's method, dataset, model or attack adds the plugin package's version (`plugins`) to every key.
"""
from __future__ import annotations

import hashlib
import json
import os

from omegaconf import DictConfig, OmegaConf, open_dict

from attacks.backdoor_attacks import BACKDOOR_ATTACKS
from attacks.evasion_attacks import EVASION_ATTACKS
from attacks.poisoning_attacks import POISONING_ATTACKS
from benchmark import plugins
from benchmark.datasets import DATASETS
from benchmark.inputs import builtin_content_sha256, data_identity, defender_count, split_sizes
from benchmark.pruning import PRUNERS, amount_key, ignores_sparsity
from benchmark.version import code_identity
from models import MODELS
from models.checkpoint import model_identity
from models.import_path import source_identity

# Keys that change where or how a cell runs, not what it computes. `device` is not among them: its type (cpu or
# cuda, `auto` resolved) enters every key as `device_type`, since CPU and CUDA kernels give different floats.
# The CPU thread count (`torch_threads`) changes float rounding, like the processor model does; it is recorded
# as run tags (torch_threads.*) rather than hashed, so one config has one cell across launchers.
RUN_ONLY_KEYS = {"device", "force", "tracking_uri", "results_dir", "experiment_name", "hydra", "torch_threads"}
# Dataset keys that do not change the data itself.
DATASET_RUN_ONLY_KEYS = {"data_root", "download", "eps", "eps_l2"}


def canonicalize(cfg: DictConfig) -> list[str]:
    """One computation, one config: values that compute the same thing are written one way before validation
    and hashing (the logged config.yaml shows the values the cell used). Returns what was rewritten, in words, for
    the cell to log once it is known to be valid (a rejected config says one line, its mistake)."""
    notes = []
    if ignores_sparsity(cfg.pruning) and cfg.pruning.sparsity != 0:
        notes.append(f"pruning={cfg.pruning.method}: sparsity {cfg.pruning.sparsity} normalised to 0 (it ignores "
                     "sparsity)")
        cfg.pruning.sparsity = 0.0
    if (key := amount_key(cfg.pruning)) is not None:
        cfg.pruning[key] = cfg.pruning[key]  # its value from here on, not the `${.sparsity}` it may follow
        if cfg.pruning.sparsity != 0:
            notes.append(f"pruning={cfg.pruning.method}: sparsity {cfg.pruning.sparsity} normalised to 0 (its "
                         f"{key}, {cfg.pruning[key]}, sets the amount)")
            cfg.pruning.sparsity = 0.0
    rate = cfg.threat.get("poison_rate")
    if isinstance(rate, float) and rate.is_integer():  # `r=0` and `r=0.0` in the threat's name: one setting
        cfg.threat.poison_rate = int(rate)
    if cfg.pruning.get("reinit") is False:  # the default: `+pruning.reinit=false` is the same cell
        with open_dict(cfg):
            del cfg.pruning["reinit"]
    if cfg.threat.get("stage") == "prune_then_poison":  # it always fine-tunes on the poisoned set
        cfg.threat.finetune_data = "poisoned"
    return notes + _clamp_subsets(cfg)


def _clamp_subsets(cfg: DictConfig) -> list[str]:
    """A subset larger than its split uses the whole split: write it as the split's size."""
    if cfg.dataset.get("name") not in DATASETS:
        return []  # validation names the problem
    n_train, n_test = split_sizes(cfg.dataset)
    n_train = max(1, n_train - defender_count(n_train, cfg.data.defender_size))  # what training keeps
    limits = [(cfg.eval, "train_subset", n_train), (cfg.threat, "subset", n_test),
              (cfg.eval.get("corruptions"), "subset", n_test), (cfg.eval.get("interpret"), "subset", n_test),
              *((attack, "subset", n_test) for attack in (cfg.threat.get("attacks") or []))]
    notes = []
    for block, key, limit in limits:
        value = block.get(key) if block is not None else None
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value > limit:
            notes.append(f"{key}={value} exceeds the split ({limit} images): normalised to {limit}")
            block[key] = limit
    return notes


def canonical(value):
    """One JSON form per value: integral floats become ints (`sparsity=0` and `0.0` are one computation)."""
    if isinstance(value, dict):
        return {k: canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [canonical(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def stable_hash(obj) -> str:
    text = json.dumps(canonical(obj), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def resolved(cfg: DictConfig) -> dict:
    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)


# A GPU torch can use needs its driver's device file: NVIDIA's, WSL2's GPU, AMD ROCm's (torch.cuda on HIP builds).
GPU_DEVICE_FILES = ("/dev/nvidiactl", "/dev/dxg", "/dev/kfd")


def device_type(name: str) -> str:
    """`cpu` or `cuda`: what `device` (auto | cpu | cuda) computes on here. Without a GPU driver's device file the
    answer is `cpu` without importing torch (seconds a grid's pre-check would pay); with one, torch decides."""
    if name == "auto":
        if not any(os.path.exists(path) for path in GPU_DEVICE_FILES):
            return "cpu"
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return str(name)


def _data_identity(dataset: dict) -> dict:
    """The dataset config minus its run-only keys, with its files' content: your own data's location replaced by its
    sha256, a built-in dataset's files' sha256 added (read from `data_root`, a run-only key)."""
    identity = data_identity({k: v for k, v in dataset.items() if k not in DATASET_RUN_ONLY_KEYS})
    content = builtin_content_sha256(dataset)
    return identity if content is None else {**identity, "sha256": content}


def plugin_versions(cfg: DictConfig) -> dict[str, str]:
    """{package: version} of the installed plugins whose entries the cell uses, read from the packages' metadata
    (no plugin imported); empty for a cell of built-in entries, whose keys then stay what they were."""
    threat = cfg.threat
    attack_registry = {"poisoning": POISONING_ATTACKS, "backdoor": BACKDOOR_ATTACKS}.get(threat.get("kind"))
    used = [(PRUNERS, cfg.pruning.method), (DATASETS, cfg.dataset.name), (MODELS, cfg.model.name),
            *((EVASION_ATTACKS, attack.name) for attack in threat.get("attacks") or []),
            *([(attack_registry, threat.attack)] if attack_registry is not None else [])]
    return plugins.versions([(registry.plugins, name) for registry, name in used])


def _model_identity(plain_model: dict) -> dict:
    """The model config as keys see it: the checkpoint by its content (`model_identity`), the code a `_target_`
    names by its content (`source_identity`), and no `normalize` key where there is none, so the keys of a model
    without it are those it had before the key existed."""
    identity = model_identity(plain_model)
    if "normalize" in identity and identity["normalize"] is None:
        del identity["normalize"]
    if plain_model.get("_target_"):
        identity["_target_code"] = source_identity(str(plain_model["_target_"]))
    return identity


def _computation(cfg: DictConfig) -> dict:
    computation = {"code": code_identity(), "device_type": device_type(cfg.device)}
    versions = plugin_versions(cfg)
    return {**computation, "plugins": versions} if versions else computation


def cell_identity(cfg: DictConfig) -> dict:
    """The config that defines what a cell computes (logged as the run's params)."""
    plain = {k: v for k, v in resolved(cfg).items() if k not in RUN_ONLY_KEYS}
    plain["dataset"] = _data_identity(plain["dataset"])
    plain["model"] = _model_identity(plain["model"])
    return canonical(plain)


def cell_hash(cfg: DictConfig) -> str:
    return stable_hash({**cell_identity(cfg), **_computation(cfg)})


def dense_key(cfg: DictConfig, training_data_key: dict | None) -> str:
    plain = resolved(cfg)
    return stable_hash(
        {
            **_computation(cfg),
            "dataset": _data_identity(plain["dataset"]),
            "model": _model_identity(plain["model"]),
            "train": plain["train"],
            "seed": plain["seed"],
            # the images held out of training (the defender split, seeded by `seed`): its resolved size
            "defender_n": defender_count(split_sizes(cfg.dataset)[0], plain["data"]["defender_size"]),
            "training_data": training_data_key,
        }
    )


def pruned_key(dense: str, cfg: DictConfig, finetune_data_key: dict | None = None) -> str:
    plain = resolved(cfg)
    return stable_hash({**_computation(cfg), "dense": dense, "pruning": plain["pruning"], "finetune": plain["finetune"],
                        "finetune_data": finetune_data_key})


# The cell keys that only decide the weights of its models: an evaluation key holds the weights instead.
WEIGHT_KEYS = ("train", "pruning", "finetune")


def evaluation_key(cfg: DictConfig, weights_sha256: str, dense_weights_sha256: str) -> str:
    """What a finished model's evaluation (benchmark/evaluation.py) is a function of: the cell's identity without the
    keys that only decide the weights (`WEIGHT_KEYS`), the code and device type, and the weights themselves (the
    model's and its dense parent's, `cache.tensors_sha256`). Cells whose pruning and fine-tuning give the same
    weights (every method at sparsity 0 prunes nothing and fine-tunes alike) share it."""
    identity = {k: v for k, v in cell_identity(cfg).items() if k not in WEIGHT_KEYS}
    return stable_hash({**identity, **_computation(cfg), "weights": weights_sha256,
                        "dense_weights": dense_weights_sha256})
