"""The two expensive, shareable stages of a cell, each behind the content-addressed cache:
dense training (shared by every pruning method and sparsity) and prune + fine-tune."""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import torch
import torch.nn as nn

from benchmark.cache import ModelCache
from benchmark.data import Dataset, seeded_indices
from benchmark.pruning import prune
from benchmark.pruning.common import PruneContext, finalize, load_state_into
from benchmark.pruning.loops import bn_l1_penalty, dense_objective, finetune_perturbation
from benchmark.recipes import Recipe
from benchmark.training import fit, seed_everything
from benchmark.version import producing_commit
from models import build_from_config
from models.checkpoint import load_checkpoint_into

CALIBRATION_SIZE = 256  # training images handed to data-aware pruning methods
DEFENDER_FINETUNE_KEY = {"set": "defender"}  # the fine-tune data key (hashing.pruned_key) of the defender split


def fresh_model(cfg, data: Dataset) -> nn.Module:
    seed_everything(cfg.seed)  # the initial weights depend on the seed only
    return build_from_config(cfg.model, data.in_channels, data.image_size, data.num_classes)


def dense_model(cfg, train: Dataset, key: str, cache: ModelCache, device, use_cache: bool = True):
    """Trained dense model for `key`, from the cache or trained now. Returns (model, meta)."""
    with cache.lock("dense", key):  # parallel workers that need one dense model train it once; the others wait
        return _dense_model(cfg, train, key, cache, device, use_cache)


def _dense_model(cfg, train: Dataset, key: str, cache: ModelCache, device, use_cache: bool):
    model = fresh_model(cfg, train)
    if cfg.model.get("checkpoint"):  # your weights replace dense training (their sha256 is in `key`)
        started = time.perf_counter()
        load_checkpoint_into(model, cfg.model.checkpoint)
        return model.to(device).eval(), {"train_s": time.perf_counter() - started, "cache_hit": False,
                                         "epoch_losses": [], "produced_by_commit": "checkpoint"}
    hit = cache.load("dense", key) if use_cache else None
    if hit is not None:
        state, meta = hit
        model.load_state_dict(state)
        return model.to(device).eval(), {**meta, "cache_hit": True}
    started = time.perf_counter()
    losses = train_loop(cfg, model, train, cfg.train.epochs, device, desc=f"dense {cfg.model.name}")
    # CPU float results depend on the intra-op thread count (reduction order): recorded so a reader can tell
    meta = {"train_s": time.perf_counter() - started, "epoch_losses": losses, "torch_threads": torch.get_num_threads(),
            "produced_by_commit": producing_commit()}
    cache.save("dense", key, model.state_dict(), meta)
    return model, {**meta, "cache_hit": False}


def train_loop(cfg, model: nn.Module, data: Dataset, epochs: int, device, desc: str) -> list[float]:
    """`epochs` of the dense training recipe (`cfg.train`: optimiser, schedule, augmentation, adversarial
    objective, Network Slimming's L1 term) on `data`'s training split; the mean loss per epoch."""
    perturb, loss_fn = dense_objective(cfg.train)
    return fit(model, data.x_train, data.y_train, epochs=epochs, lr=cfg.train.lr, batch_size=cfg.train.batch_size,
               seed=cfg.seed, device=device, desc=desc, recipe=Recipe.from_config(cfg.train), perturb=perturb,
               loss_fn=loss_fn, extra_loss=bn_l1_penalty(cfg.train.slimming_l1))


def finetune_loop(cfg, model: nn.Module, data: Dataset, epochs: int, device, desc: str,
                  on_epoch_end=None) -> list[float]:
    """`epochs` of the fine-tune recipe (`cfg.finetune`, PGD examples when `finetune.adversarial`) on `data`'s
    training split, pruning masks fixed; the mean loss per epoch."""
    return fit(model, data.x_train, data.y_train, epochs=epochs, lr=cfg.finetune.lr,
               batch_size=cfg.finetune.batch_size, seed=cfg.seed, device=device, desc=desc,
               recipe=Recipe.from_config(cfg.finetune), perturb=finetune_perturbation(cfg.finetune),
               on_epoch_end=on_epoch_end)


@dataclass(frozen=True)
class TrainingSets:
    """The training-side data of a cell, by role (a poisoning threat decides which are poisoned):
    - `dense`: what the dense model was trained on; pruners that retrain from init or rewind train on it;
    - `calibration`: clean training images, for importance scores and activation statistics;
    - `pruning_finetune`: fine-tuning between the steps of a pruning schedule (before the "just pruned" point);
    - `finetune`: the cell's fine-tune after pruning;
    - `defender`: the defender split (clean images held out of every other role), what the pruning-based defences
      read to choose what and how much to prune, and what `threat.finetune_data=defender` fine-tunes on."""
    dense: Dataset
    calibration: Dataset
    pruning_finetune: Dataset
    finetune: Dataset
    defender: Dataset

    @classmethod
    def clean(cls, data: Dataset) -> "TrainingSets":
        return cls(data, data, data, data, data.defender())

    def roles(self, clean: Dataset) -> dict[str, str]:
        """Role -> "clean", "poisoned" or "defender" (the defender split), for the run's tags."""
        def kind(role: str) -> str:
            used = getattr(self, role)
            return "clean" if used is clean else "defender" if used is self.defender else "poisoned"

        return {f"data.{role}": kind(role) for role in ("dense", "calibration", "pruning_finetune", "finetune")}


def prune_context(cfg, sets: TrainingSets, device) -> PruneContext:
    """What pruners get: inputs for torch-pruning, a clean calibration batch, the defender split (the defences'
    own clean set), the pruning-stage fine-tune set (HYDRA learns its scores on it) and, for methods that
    train inside (iterative schedules, lottery ticket, SNIP at init), the seeded init, a loop on the dense model's
    training set (retraining) and a loop on the pruning-stage fine-tune set."""
    dense, tune = sets.dense, sets.pruning_finetune

    def retrain(model, epochs):
        return train_loop(cfg, model, dense, epochs, device, desc=f"retrain {cfg.pruning.method}")

    def finetune_step(model, epochs=None):
        return finetune_loop(cfg, model, tune, cfg.finetune.epochs if epochs is None else epochs, device,
                             desc=f"fine-tune step {cfg.pruning.method}")

    calib = sets.calibration
    idx = seeded_indices(len(calib.y_train), CALIBRATION_SIZE, cfg.seed)
    initial = {k: v.to(device) for k, v in fresh_model(cfg, dense).state_dict().items()}
    return PruneContext(example_inputs=calib.x_train[:1].to(device),
                        calibration=(calib.x_train[idx], calib.y_train[idx]), seed=cfg.seed,
                        defender=(sets.defender.x_train, sets.defender.y_train),
                        pruning_train=(tune.x_train, tune.y_train),
                        initial_state=initial, train=retrain, finetune=finetune_step, train_epochs=cfg.train.epochs)


def pruned_model(cfg, dense: nn.Module, sets: TrainingSets, key: str, cache: ModelCache, device,
                 use_cache: bool = True, track=None):
    """Dense model pruned by `cfg.pruning` (with `sets`' roles) and fine-tuned on `sets.finetune` with its masks
    fixed. Returns (model, meta). `track` (model -> metrics, or None) is evaluated after pruning and after every
    fine-tune epoch: meta["tracked"] (cached with the model)."""
    train = sets.finetune
    hit = cache.load("pruned", key) if use_cache else None
    if hit is not None and (track is None or "tracked" in hit[1]):  # an entry built untracked is rebuilt tracked
        state, meta = hit
        return load_state_into(fresh_model(cfg, train), state).to(device).eval(), {**meta, "cache_hit": True}
    ctx = prune_context(cfg, sets, device)
    started = time.perf_counter()
    outcome = prune(copy.deepcopy(dense).cpu().to(device), cfg.pruning, ctx)
    prune_s = time.perf_counter() - started
    tracked = [track(outcome.model)] if track else []
    started = time.perf_counter()
    losses = finetune_loop(cfg, outcome.model, train, cfg.finetune.epochs, device,
                           desc=f"fine-tune {cfg.pruning.method}",
                           on_epoch_end=(lambda epoch, m: tracked.append(track(m))) if track else None)
    model = finalize(outcome.model)
    meta = {"prune_s": prune_s, "finetune_s": time.perf_counter() - started, "epoch_losses": losses,
            "structured": outcome.structured, "info": outcome.info, "torch_threads": torch.get_num_threads(),
            "produced_by_commit": producing_commit(),
            **({"tracked": tracked} if track else {})}
    cache.save("pruned", key, model.state_dict(), meta)
    return model, {**meta, "cache_hit": False}


def clean_reference_model(cfg, data: Dataset, cache: ModelCache, device, use_cache: bool = True) -> nn.Module:
    """The model of this cell's method and sparsity without any poison, fine-tuned on the clean training set (the
    same cache keys as an evasion cell, so it is shared with or built for the clean grid) or, under
    `threat.finetune_data=defender`, on the defender split like the cell."""
    from benchmark import hashing

    dense_key = hashing.dense_key(cfg, None)
    dense, _ = dense_model(cfg, data, dense_key, cache, device, use_cache)
    sets, finetune_key = TrainingSets.clean(data), None
    if cfg.threat.get("finetune_data") == "defender":
        sets = TrainingSets(data, data, sets.defender, sets.defender, sets.defender)
        finetune_key = DEFENDER_FINETUNE_KEY
    model, _ = pruned_model(cfg, dense, sets, hashing.pruned_key(dense_key, cfg, finetune_key), cache, device,
                            use_cache)
    return model
