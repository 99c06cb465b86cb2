"""Known answers for the poisoning and backdoor threats, on `digits` with the seed CNN."""
from __future__ import annotations

import copy
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch

from attacks import build_threat, poisoning
from attacks.poisoning_attacks.label_flip import flip_labels
from benchmark import hashing
from benchmark.cell import prepare, run_cell
from benchmark.data import cell_data
from benchmark.training import accuracy_and_loss, fit
from benchmark.validate import ConfigError
from models import build_model

CPU = torch.device("cpu")


def _threat(cfg, data, seed=0):
    threat = build_threat(cfg.threat)
    return threat, threat.plan(data, CPU, seed).poisoned


def _dense(train, epochs=8, lr=3e-3):
    """The dense, undefended seed CNN trained on `train` (the known-answer tests' victim)."""
    torch.manual_seed(0)
    model = build_model("seed_cnn", train.in_channels, train.image_size, train.num_classes)
    fit(model, train.x_train, train.y_train, epochs=epochs, lr=lr, batch_size=64, seed=0, device=CPU, desc="dense")
    return model


def _judge(threat, clean_model, poisoned_model, data):
    """threat.effectiveness with the cell's dense_for: the clean dense model for key None, else the poisoned one."""
    return threat.effectiveness(lambda key: clean_model if key is None else poisoned_model, data, CPU, seed=0)


# ---- every threat works on the dense, undefended model at its shipped budget (digits, seed CNN) ----------------
@pytest.mark.parametrize("name, epochs", [("badnets", 8), ("blended", 12)])  # the blend needs longer to take
def test_dirty_label_backdoor_dense_model_has_high_asr_and_normal_clean_behaviour(cfg_factory, digits, name, epochs,
                                                                                 trained_seed_cnn):
    threat, poisoned = _threat(cfg_factory(f"threat={name}", "threat.subset=360"), digits)
    model = _dense(poisoned, epochs=epochs)
    metrics = threat.threat_metrics(model, digits, CPU, seed=0)
    assert metrics["backdoor/asr"] >= 0.8
    assert accuracy_and_loss(model, digits.x_test, digits.y_test, CPU)[0] > 0.9
    # without the trigger the target class is not predicted abnormally (under 5% of other-class images)
    assert metrics["backdoor/target_rate_clean"] < 0.05
    assert metrics["backdoor/clean_acc_triggered"] < 0.3  # the trigger overrides the true class
    assert _judge(threat, trained_seed_cnn, model, digits) == {
        "threat/dense_success": metrics["backdoor/asr"], "threat/effective": 1.0}
    assert _judge(threat, trained_seed_cnn, trained_seed_cnn, digits)["threat/effective"] == 0.0  # no backdoor


def test_clean_label_backdoor_dense_model_has_asr(cfg_factory, digits):
    """Turner et al. 2019: PGD-perturbed target-class images with a visible trigger, most of the target class."""
    threat, poisoned = _threat(cfg_factory("threat=clean_label_backdoor", "threat.subset=360"), digits)
    assert torch.equal(poisoned.y_train, digits.y_train)  # clean label
    model = _dense(poisoned)
    metrics = threat.threat_metrics(model, digits, CPU, seed=0)
    assert metrics["backdoor/asr"] >= 0.5
    assert metrics["backdoor/target_rate_clean"] < 0.05
    assert accuracy_and_loss(model, digits.x_test, digits.y_test, CPU)[0] > 0.9


@pytest.mark.slow  # the proxy, the poisons and a 10-epoch dense training on 4,000 images
def test_clean_label_backdoor_dense_model_has_asr_on_mnist5k(tmp_path):
    """At the backdoor preset's budget on 28x28 images: the band trigger is the same share of the image as on
    digits, and the backdoor takes."""
    from conftest import compose_cfg

    cfg = compose_cfg(tmp_path, "experiment=backdoor", "threat=clean_label_backdoor", "pruning=none")
    data = cell_data(cfg)
    threat, poisoned = _threat(cfg, data)
    model = _dense(poisoned, epochs=cfg.train.epochs, lr=cfg.train.lr)
    metrics = threat.threat_metrics(model, data, CPU, seed=0)
    assert metrics["backdoor/asr"] >= 0.5
    assert metrics["backdoor/target_rate_clean"] < 0.05
    assert accuracy_and_loss(model, data.x_test, data.y_test, CPU)[0] > 0.9
    assert _judge(threat, None, model, data)["threat/effective"] == 1.0


@pytest.mark.parametrize("side", [16, 28, 32])
def test_band_trigger_is_the_same_share_of_any_image_size(cfg_factory, side):
    """extent 1.0 stamps from the bottom-right corner to the top-left one; 0.5 covers the bottom-right half."""
    for extent, first in ((1.0, 0), (0.5, side // 2 - 1)):
        cfg = cfg_factory("threat=clean_label_backdoor", f"threat.trigger.extent={extent}")
        stamped = build_threat(cfg.threat).triggered(np.zeros((1, 1, side, side), np.float32))[0, 0] > 0
        rows, cols = np.flatnonzero(stamped.any(1)), np.flatnonzero(stamped.any(0))
        assert rows.max() == cols.max() == side - 1
        assert abs(rows.min() - first) <= 1 and abs(cols.min() - first) <= 1, (extent, rows.min())
        assert np.array_equal(stamped, stamped.T)  # along the diagonal


def test_random_label_flip_costs_the_dense_model_accuracy(cfg_factory, digits, trained_seed_cnn):
    threat, poisoned = _threat(cfg_factory("threat=label_flip"), digits)
    model = _dense(poisoned, lr=1e-3)  # the recipe of trained_seed_cnn, the clean dense model
    clean_acc = accuracy_and_loss(trained_seed_cnn, digits.x_test, digits.y_test, CPU)[0]
    poisoned_acc = accuracy_and_loss(model, digits.x_test, digits.y_test, CPU)[0]
    assert clean_acc - poisoned_acc >= 0.05
    judged = _judge(threat, trained_seed_cnn, model, digits)
    assert judged == {"threat/dense_success": pytest.approx(clean_acc - poisoned_acc), "threat/effective": 1.0}


def test_targeted_label_flip_moves_the_source_class(cfg_factory, digits, trained_seed_cnn):
    threat, poisoned = _threat(cfg_factory("threat=label_flip_targeted", "threat.subset=360"), digits)
    model = _dense(poisoned, lr=1e-3)
    success = threat.threat_metrics(model, digits, CPU, seed=0)["poison/targeted_success"]
    assert success >= 0.3
    # the clean model at the same method and sparsity (here: the clean dense model) is the reference
    ref = threat.reference_metrics(trained_seed_cnn, {"clean/acc": 1.0, "poison/targeted_success": success},
                                   digits, CPU, seed=0)
    assert ref["poison/targeted_success_ref"] < 0.1  # a clean model rarely calls a source image the target
    assert ref["poison/targeted_success_delta"] == pytest.approx(success - ref["poison/targeted_success_ref"])


def test_feature_collision_collides(cfg_factory, digits):
    """At the shipped optimiser budget each poison's proxy features land next to a target's, far from its base's."""
    rate = 5 / len(digits.y_train)  # round(rate * N) = 5 poisons: 1 per target
    cfg = cfg_factory("threat=feature_collision", "threat.num_targets=5", f"threat.poison_rate={rate}")
    threat, poisoned = _threat(cfg, digits)
    changed = (poisoned.x_train != digits.x_train).flatten(1).any(1)
    assert int(changed.sum()) == 5 and torch.equal(poisoned.y_train, digits.y_train)  # clean label
    features = poisoning.proxy_classifier(cfg.threat.proxy, digits, seed=0).model[:-1]  # the same proxy, retrained
    with torch.no_grad():
        targets = features(digits.x_test[threat.targets(digits, seed=0)])
        to_target = lambda x: torch.cdist(features(x), targets).min(1).values
        poison_distance, base_distance = to_target(poisoned.x_train[changed]), to_target(digits.x_train[changed])
    assert (poison_distance < 0.25 * base_distance).all()


@pytest.mark.slow  # 50 poisons x 100 ART iterations, one image at a time
def test_feature_collision_succeeds_in_transfer_learning(cfg_factory, digits):
    """Shafahi et al. 2018's transfer-learning setting: the victim keeps the proxy's feature extractor frozen and
    retrains its classifier head on the poisoned set, whose poisons collide with the targets in that feature space."""
    from models import classifier_head

    cfg = cfg_factory("threat=feature_collision")
    assert cfg.threat.num_targets >= 10
    threat, poisoned = _threat(cfg, digits)
    extractor = poisoning.proxy_classifier(cfg.threat.proxy, digits, seed=0).model  # the attacker's proxy, retrained

    def transfer(train):
        victim = copy.deepcopy(extractor).requires_grad_(False)
        classifier_head(victim).requires_grad_(True)
        fit(victim, train.x_train, train.y_train, epochs=30, lr=1e-2, batch_size=64, seed=0, device=CPU, desc="head")
        return victim

    success = threat.threat_metrics(transfer(poisoned), digits, CPU, seed=0)["poison/targeted_success"]
    clean = threat.threat_metrics(transfer(digits), digits, CPU, seed=0)["poison/targeted_success"]
    assert success >= 0.5 and clean <= 0.1


@pytest.mark.parametrize("name", ["badnets", "blended"])
def test_backdoor_poison_rate_is_the_share_of_the_training_set(cfg_factory, digits, name):
    threat = build_threat(cfg_factory(f"threat={name}", "threat.poison_rate=0.1").threat)
    plan = threat.plan(digits, CPU, 0)
    poisoned = plan.poisoned
    changed = (poisoned.x_train != digits.x_train).flatten(1).any(1)
    relabelled = poisoned.y_train != digits.y_train
    assert torch.equal(changed, relabelled)  # every stamped image is relabelled, and only those
    assert (poisoned.y_train[changed] == 0).all() and (digits.y_train[changed] != 0).all()
    n = len(digits.y_train)
    assert plan.report.metrics["poison/rate_applied"] == pytest.approx(changed.float().mean().item())
    assert abs(plan.report.metrics["poison/rate_applied"] - 0.1) <= 1 / n  # the request, within one image


def test_backdoor_poison_rate_beyond_the_non_target_images_names_the_key(cfg_factory, digits):
    with pytest.raises(ValueError, match="threat.poison_rate=0.95"):
        _threat(cfg_factory("threat=badnets", "threat.poison_rate=0.95"), digits)


def test_label_flip_rate_zero_is_the_clean_model(cfg_factory, digits):
    flip0 = cfg_factory("threat=label_flip", "threat.poison_rate=0")
    clean = cfg_factory("threat=pgd")
    threat, poisoned = _threat(flip0, digits)
    assert threat.training_data_key() is None and threat.finetune_data_key() is None
    assert hashing.dense_key(flip0, threat.training_data_key()) == hashing.dense_key(clean, None)
    assert poisoned is digits
    flipped = build_threat(cfg_factory("threat=label_flip", "threat.poison_rate=0.1").threat)
    assert hashing.dense_key(flip0, flipped.training_data_key()) != hashing.dense_key(clean, None)


def test_stage_and_finetune_data_choose_the_cache_keys(cfg_factory):
    keys = {}
    for stage, finetune in [("poison_then_prune", "clean"), ("poison_then_prune", "poisoned"),
                            ("prune_then_poison", "poisoned")]:
        cfg = cfg_factory("threat=badnets", f"threat.stage={stage}", f"threat.finetune_data={finetune}")
        threat = build_threat(cfg.threat)
        dense = hashing.dense_key(cfg, threat.training_data_key())
        keys[stage, finetune] = dense, hashing.pruned_key(dense, cfg, threat.finetune_data_key())
    clean_dense = hashing.dense_key(cfg_factory("threat=pgd"), None)
    assert keys["prune_then_poison", "poisoned"][0] == clean_dense  # a clean dense model, poisoned fine-tuning
    assert keys["poison_then_prune", "clean"][0] == keys["poison_then_prune", "poisoned"][0] != clean_dense
    assert len({pruned for _, pruned in keys.values()}) == 3


def test_targeted_flipping_flips_only_the_source_class():
    y = np.repeat(np.arange(10), 50)
    flipped = flip_labels(y, 0.4, 10, seed=0, mode="targeted", source=3, target=8)
    changed = flipped != y
    assert changed.sum() == 20 and (y[changed] == 3).all() and (flipped[changed] == 8).all()
    random = flip_labels(y, 0.2, 10, seed=0)
    assert (random != y).sum() == 100  # every chosen label really changes class


def test_poisoned_sets_are_deterministic_per_seed(cfg_factory, digits):
    def fresh(cfg, seed):
        poisoning.forget_poisoned_sets()  # rebuild, not the process's memoised set
        return _threat(cfg, digits, seed)[1]

    for threat_name in ("badnets", "label_flip", "blended"):
        cfg = cfg_factory(f"threat={threat_name}")
        a, b, c = (fresh(cfg, seed) for seed in (0, 0, 1))
        assert a is not b
        assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_train, b.y_train), threat_name
        assert not (torch.equal(a.x_train, c.x_train) and torch.equal(a.y_train, c.y_train)), threat_name


@pytest.mark.parametrize("override, key", [
    ("threat.poison_rate=1.5", "threat.poison_rate"),
    ("threat.poison_rate=-0.1", "threat.poison_rate"),
    ("threat.target_class=10", "threat.target_class"),
    ("threat.target_class=-1", "threat.target_class"),
    ("threat.stage=before", "threat.stage"),
    ("threat.finetune_data=mixed", "threat.finetune_data"),
    ("threat.effective_threshold=2", "threat.effective_threshold"),
    ("threat.trigger.kind=star", "threat.trigger.kind"),
])
def test_bad_poison_config_fails_before_training(cfg_factory, override, key):
    cfg = cfg_factory("threat=badnets", override)
    with pytest.raises(ConfigError, match=key):
        prepare(cfg)
    assert not Path(cfg.results_dir, "cache").exists()


@pytest.mark.parametrize("override", ["threat.trigger.extent=0", "threat.trigger.extent=1.5",
                                      "threat.trigger.extent=[1,2]"])
def test_bad_band_trigger_fails_before_training(cfg_factory, override):
    cfg = cfg_factory("threat=clean_label_backdoor", override)
    with pytest.raises(ConfigError, match=r"threat\.trigger\.extent=.*allowed: .*extent"):
        prepare(cfg)


def test_targeted_flip_with_equal_classes_fails(cfg_factory):
    with pytest.raises(ConfigError, match="threat.source_class"):
        prepare(cfg_factory("threat=label_flip_targeted", "threat.source_class=7", "threat.target_class=7"))


def test_clean_label_attacks_keep_every_label(cfg_factory, digits):
    for name, extra in (("clean_label_backdoor", ["threat.pgd.max_iter=3"]), ("feature_collision", ["threat.max_iter=20"])):
        threat, poisoned = _threat(cfg_factory(f"threat={name}", "threat.proxy.epochs=2", *extra), digits)
        changed = (poisoned.x_train != digits.x_train).flatten(1).any(1)
        assert torch.equal(poisoned.y_train, digits.y_train), name
        assert changed.sum() > 0 and (digits.y_train[changed] == 0).all(), name  # only target-class images
        assert poisoned.x_train.min() >= 0 and poisoned.x_train.max() <= 1, name


def test_prune_then_poison_cell_logs_per_epoch_curves_and_damage(cfg_factory, tmp_path):
    cfg = cfg_factory("threat=badnets", "threat.stage=prune_then_poison", "finetune.epochs=2",
                      "pruning=magnitude_global", "pruning.sparsity=0.5", "threat.subset=200",
                      "eval=fast")
    result = run_cell(cfg)
    assert result.status == "finished" and cfg.threat.finetune_data == "poisoned"  # canonicalised
    m = result.metrics
    assert m["poison/acc_drop"] == pytest.approx(m["poison/ref_clean_acc"] - m["clean/acc"])
    # the threat is judged on the dense model trained on the poisoned set, not on this cell's clean dense model:
    # the cell built both (the poisoned one is what a poison_then_prune cell would reuse)
    assert len(list(Path(cfg.results_dir, "cache", "dense").glob("*.safetensors"))) == 2
    assert m["threat/effective"] == float(m["threat/dense_success"] >= cfg.threat.effective_threshold)
    client = mlflow.MlflowClient()
    history = client.get_metric_history(result.run_id, "finetune/backdoor/asr")
    assert sorted(h.step for h in history) == [0, 1, 2]  # just pruned, then after each fine-tune epoch
    assert max(history, key=lambda h: h.step).value == pytest.approx(m["backdoor/asr"])  # the final model
    artifacts = [a.path for a in client.list_artifacts(result.run_id)]
    assert "poison_examples.png" in artifacts


def test_the_clean_label_proxy_has_a_seed_of_its_own_and_the_run_says_what_the_attacker_knows(cfg_factory, digits):
    """By default the attacker's proxy is not the victim's twin (another seed: a transfer attack); seed_offset 0
    with the victim's architecture is the white-box attacker, and the cell's tag says which."""
    own = cfg_factory("threat=clean_label_backdoor", "threat.proxy.epochs=1")
    twin = cfg_factory("threat=clean_label_backdoor", "threat.proxy.epochs=1", "threat.proxy.seed_offset=0")
    assert own.threat.proxy.seed_offset > 0
    assert build_threat(own.threat).tags("seed_cnn") == {"threat/knowledge": "transfer"}
    assert build_threat(twin.threat).tags("seed_cnn") == {"threat/knowledge": "white_box"}
    assert build_threat(twin.threat).tags("lenet300") == {"threat/knowledge": "transfer"}
    assert build_threat(cfg_factory("threat=pgd").threat).tags("seed_cnn") == {}

    def weights(proxy_cfg, seed):
        return torch.cat([p.flatten() for p in poisoning.proxy_classifier(proxy_cfg, digits, seed).model.parameters()])

    offset = int(own.threat.proxy.seed_offset)
    assert torch.equal(weights(own.threat.proxy, 0), weights(twin.threat.proxy, offset))  # its seed: cell's + offset
    assert not torch.equal(weights(own.threat.proxy, 0), weights(twin.threat.proxy, 0))  # not the victim's seed
