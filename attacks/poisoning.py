"""Threats that change the training data (`threat.kind: poisoning`). `DataThreat` is the shared base, also used by
attacks/backdoor.py. The attacks that build the poisoned set are plugins in attacks/poisoning_attacks/ (label
flipping, clean-label feature collision); this module is the threat around them.

Where pruning meets poison (`threat.stage`):
- `poison_then_prune`: the dense model trains on the poisoned set (its cache key includes the poison config);
  fine-tuning uses `threat.finetune_data`: `clean` (the clean training set), `defender` (the defender split only:
  the small clean set a defender holds, benchmark/data.hold_out_defender) or `poisoned` (an attacker-controlled
  pipeline).
- `prune_then_poison`: a clean dense model is pruned, then fine-tuned on the poisoned set.
Either way the threat's metrics are tracked right after pruning (`<metric>_pruned`, e.g. `backdoor/asr_pruned`,
`clean/acc_pruned`) and after every fine-tune epoch (curves `finetune/<metric>`).
"""
from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn as nn
from omegaconf import OmegaConf

from attacks import THREATS
from attacks.art_classifier import art_classifier
from attacks.base import Threat, ThreatReport, TrainingPlan
from attacks.poisoning_attacks import POISONING_ATTACKS
from benchmark.checks import ConfigError
from benchmark.data import Dataset, eval_subset
from benchmark.hashing import stable_hash
from benchmark.stages import DEFENDER_FINETUNE_KEY, TrainingSets
from benchmark.training import accuracy_and_loss, fit, predict, seed_everything

# Keys that say where/how the poisoned set is used or evaluated, not what it is: outside the poison's identity.
_NOT_POISON_IDENTITY = {"name", "stage", "finetune_data", "clean_reference", "subset", "effective_threshold"}
# Poisoned sets built in this process, newest last: the cells of a grid run in long-lived workers and share them
# (feature collision and the clean-label backdoor each cost a proxy training and an ART attack).
_POISONED: dict[tuple, tuple] = {}
_POISONED_MAX = 4


def forget_poisoned_sets() -> None:
    """Empty the process's memo of poisoned sets: the next cell builds its set anew."""
    _POISONED.clear()


class DataThreat(Threat):
    """Base of the training-data threats: the poisoned set, where it is used, its cache keys and reference."""

    # ---- identity and cache keys -------------------------------------------------------------------------
    def poison_identity(self) -> dict | None:
        """The config that defines the poisoned set; None when nothing is poisoned (rate 0 is the clean set)."""
        if self.cfg.poison_rate == 0:
            return None
        plain = OmegaConf.to_container(self.cfg, resolve=True)
        return {k: v for k, v in plain.items() if k not in _NOT_POISON_IDENTITY}

    def _finetune_poisoned(self) -> bool:
        return self.cfg.stage == "prune_then_poison" or self.cfg.finetune_data == "poisoned"

    def training_data_key(self) -> dict | None:
        """What the dense model's training data was, when not the clean set (enters the dense cache key)."""
        return None if self.cfg.stage == "prune_then_poison" else self.poison_identity()

    def finetune_data_key(self) -> dict | None:
        """What the fine-tune data was, when not the clean training set (enters the pruned model's cache key)."""
        if self._finetune_poisoned():
            return self.poison_identity()
        return DEFENDER_FINETUNE_KEY if self.cfg.finetune_data == "defender" else None

    # ---- the plan ------------------------------------------------------------------------------------------
    def plan(self, data: Dataset, device: torch.device, seed: int) -> TrainingPlan:
        """The poisoned set and who trains on it: `prune_then_poison` prunes the clean model on clean data and the
        poison arrives with the final fine-tune; `poison_then_prune` trains the dense model on the poisoned set
        and fine-tunes (also between the steps of a pruning schedule) on `threat.finetune_data`. Importance
        scores always see clean calibration images; the defences read the defender split."""
        poisoned, stats, examples = self.poisoned_set(data, seed)
        prune_then_poison = self.cfg.stage == "prune_then_poison"
        defender = data.defender()
        finetune = poisoned if self._finetune_poisoned() else defender if self.cfg.finetune_data == "defender" else data
        sets = TrainingSets(dense=data if prune_then_poison else poisoned, calibration=data,
                            pruning_finetune=data if prune_then_poison else finetune, finetune=finetune,
                            defender=defender)
        report = ThreatReport(metrics=dict(stats))
        if examples is not None:
            report.figures["poison_examples.png"] = examples_figure(*examples)
        return TrainingPlan(sets, poisoned, dense_data_key=self.training_data_key(),
                            finetune_data_key=self.finetune_data_key(),
                            tracker=self._tracker(data, device, seed),
                            wants_clean_reference=bool(self.cfg.clean_reference) and self.poison_identity() is not None,
                            report=report)

    # ---- poisoning ----------------------------------------------------------------------------------------
    def poisoned_set(self, data: Dataset, seed: int) -> tuple[Dataset, dict[str, float], tuple | None]:
        """(poisoned training set, what poisoning did, a few poisoned images and their captions or None)."""
        if self.poison_identity() is None:
            return data, {"poison/rate_applied": 0.0, "poison/n_poisoned": 0.0}, None
        key = (id(data), seed, stable_hash(self.poison_identity()))
        if key not in _POISONED:
            _POISONED[key] = (data, *self._build(data, seed))  # holding `data` keeps its id() from being reused
            while len(_POISONED) > _POISONED_MAX:
                _POISONED.pop(next(iter(_POISONED)))
        return _POISONED[key][1:]

    def _build(self, data: Dataset, seed: int):
        started = time.perf_counter()
        x, y, changed = self._poison(data, seed)
        x, y = torch.as_tensor(np.asarray(x, dtype=np.float32)), torch.as_tensor(np.asarray(y, dtype=np.int64))
        changed = np.flatnonzero(changed)
        stats = {"poison/rate_applied": len(changed) / len(y), "poison/n_poisoned": float(len(changed)),
                 "time/poison_s": time.perf_counter() - started}  # of the build: a memoised set reports it again
        shown = changed[:6]
        old, new = data.y_train.numpy(), y.numpy()
        examples = (x[shown].numpy(), [f"#{i}: {old[i]}->{new[i]}" for i in shown])
        return data.replace(x_train=x, y_train=y), stats, examples

    def _poison(self, data: Dataset, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(x_train, y_train, mask of changed examples), deterministic for a seed."""
        raise NotImplementedError

    # ---- evaluation ---------------------------------------------------------------------------------------
    def evaluate(self, model: nn.Module, data: Dataset, device: torch.device, seed: int) -> ThreatReport:
        return ThreatReport(metrics=self.threat_metrics(model, data, device, seed))

    def threat_metrics(self, model: nn.Module, data: Dataset, device: torch.device, seed: int) -> dict[str, float]:
        raise NotImplementedError

    def _tracker(self, data: Dataset, device: torch.device, seed: int):
        def track(model: nn.Module) -> dict[str, float]:
            was_training = model.training
            metrics = {"clean/acc": accuracy_and_loss(model, data.x_test, data.y_test, device)[0],
                       **self.threat_metrics(model, data, device, seed)}
            model.train(was_training)
            return metrics

        return track

    # ---- does the attack work at all? ---------------------------------------------------------------------
    SUCCESS_METRIC = ""  # the key of threat_metrics that says how well the attack succeeds

    def dense_success(self, dense_for, data: Dataset, device: torch.device, seed: int) -> float:
        """The attack's success on the dense, undefended model: the one trained on the poisoned set."""
        return self.threat_metrics(dense_for(self.poison_identity()), data, device, seed)[self.SUCCESS_METRIC]

    def effectiveness(self, dense_for, data: Dataset, device: torch.device, seed: int) -> dict[str, float]:
        success = self.dense_success(dense_for, data, device, seed)
        return {"threat/dense_success": success, "threat/effective": float(success >= self.cfg.effective_threshold)}

    def reference_metrics(self, reference, model_metrics, data, device, seed) -> dict[str, float]:
        """Damage against the clean model at the same method and sparsity (the evasion cell's pruned model)."""
        ref_acc = accuracy_and_loss(reference, data.x_test, data.y_test, device)[0]
        return {"poison/ref_clean_acc": ref_acc, "poison/acc_drop": ref_acc - model_metrics["clean/acc"]}

    # ---- config checks (benchmark/validate.py calls these before any compute; it checks poison_rate) --------
    @classmethod
    def check_config(cls, cfg) -> None:
        if cfg.stage == "prune_then_poison" and cfg.finetune_data != "poisoned":
            raise ConfigError("threat.stage='prune_then_poison' fine-tunes on the poisoned set; "
                              "threat.finetune_data must be 'poisoned' (hashing.canonicalize sets it)")
        if cfg.attack == "label_flip" and cfg.mode == "targeted" and cfg.source_class == cfg.target_class:
            raise ConfigError(f"threat.source_class={cfg.source_class} equals threat.target_class: "
                              "targeted flipping needs two different classes")

    @classmethod
    def class_keys(cls, cfg) -> list[str]:
        """The keys that name a class: benchmark/validate.py checks them against dataset.num_classes."""
        uses_source = cfg.attack == "feature_collision" or (cfg.attack == "label_flip" and cfg.mode == "targeted")
        return ["target_class", "source_class"] if uses_source else (
            [] if cfg.attack == "label_flip" else ["target_class"])


# ---- helpers shared with attacks/backdoor.py -----------------------------------------------------------------
def proxy_classifier(cfg_proxy, data: Dataset, seed: int):
    """A clean model the attacker trains for the clean-label attacks (ART needs one for feature collision / PGD),
    with a seed of its own: the cell's `seed` plus `proxy.seed_offset`."""
    from models import build_model

    seed = seed + int(cfg_proxy.seed_offset)
    seed_everything(seed)
    model = build_model(cfg_proxy.model, data.in_channels, data.image_size, data.num_classes)
    fit(model, data.x_train, data.y_train, epochs=cfg_proxy.epochs, lr=cfg_proxy.lr, batch_size=64, seed=seed,
        device=torch.device("cpu"), desc="proxy")
    model.eval().requires_grad_(False)  # ART needs input gradients only (attacks/art_classifier.py)
    return art_classifier(model, tuple(data.x_train.shape[1:]), data.num_classes, torch.device("cpu"))


def predictions(model: nn.Module, x: torch.Tensor | np.ndarray, device: torch.device) -> np.ndarray:
    return predict(model, torch.as_tensor(x), device).argmax(1).numpy()


def examples_figure(images: np.ndarray, captions: list[str]):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, max(len(images), 1), figsize=(1.6 * max(len(images), 1), 1.9), squeeze=False)
    for ax in axes[0]:
        ax.axis("off")
    for ax, img, caption in zip(axes[0], images, captions):
        img = np.transpose(img, (1, 2, 0))
        ax.imshow(img.squeeze(-1) if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=1)
        ax.set_title(caption, fontsize=7)
    fig.tight_layout()
    plt.close(fig)  # logged by the cell with mlflow.log_figure; not shown
    return fig


@THREATS.register("poisoning")
class PoisoningThreat(DataThreat):
    def _poison(self, data: Dataset, seed: int):
        return POISONING_ATTACKS[self.cfg.attack].target(self, data, seed)

    def targets(self, data: Dataset, seed: int) -> np.ndarray:
        """Indices of the test images of `source_class` the clean-label attack wants classified as `target_class`."""
        pool = np.flatnonzero(data.y_test.numpy() == self.cfg.source_class)
        return np.random.default_rng(seed).choice(pool, size=min(self.cfg.num_targets, len(pool)), replace=False)

    SUCCESS_METRIC = "poison/targeted_success"

    def _targeted(self) -> bool:
        return self.cfg.attack == "feature_collision" or self.cfg.get("mode") == "targeted"

    def dense_success(self, dense_for, data, device, seed) -> float:
        """Targeted attacks: their targeted success. Random label flipping: the test accuracy it costs the dense
        model (clean dense minus poisoned dense)."""
        if self._targeted():
            return super().dense_success(dense_for, data, device, seed)
        clean, poisoned = (accuracy_and_loss(dense_for(key), data.x_test, data.y_test, device)[0]
                           for key in (None, self.poison_identity()))
        return clean - poisoned

    def reference_metrics(self, reference, model_metrics, data, device, seed) -> dict[str, float]:
        metrics = super().reference_metrics(reference, model_metrics, data, device, seed)
        if self._targeted():  # what the clean model at this method and sparsity does to the same targets
            ref = self.threat_metrics(reference, data, device, seed)[self.SUCCESS_METRIC]
            metrics["poison/targeted_success_ref"] = ref
            metrics["poison/targeted_success_delta"] = model_metrics[self.SUCCESS_METRIC] - ref
        return metrics

    def threat_metrics(self, model, data, device, seed) -> dict[str, float]:
        if self.cfg.attack == "feature_collision":
            hit = predictions(model, data.x_test[self.targets(data, seed)], device) == self.cfg.target_class
            return {"poison/targeted_success": float(hit.mean())}
        if self.cfg.get("mode") == "targeted":  # source-class images of the eval subset classified as the target
            x, y = eval_subset(data, self.cfg.subset, seed)
            hit = predictions(model, x[y == self.cfg.source_class], device) == self.cfg.target_class
            return {"poison/targeted_success": float(hit.mean())}
        return {}
