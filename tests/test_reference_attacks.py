"""The reference AutoAttack (pyautoattack) and FMN (secml-torch) as attacks of the suite: the reference is no weaker
than ART's rebuild of its composition in one cell, runs the budget it is given and leaves torch's generator alone;
FMN finds the known minimal perturbation of a linear model, and the evasion threat reads it off in FMN's norm."""
from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn as nn
from omegaconf import OmegaConf

from attacks import build_threat
from attacks.art_classifier import art_classifier, to_numpy
from attacks.evasion import ATTACKS, EvasionThreat
from attacks.evasion_attacks import EVASION_ATTACKS

CPU = torch.device("cpu")
CPU_BUDGET = {"max_iter": 10, "square_queries": 100, "batch_size": 250}  # the standard composition, fewer steps


def test_reference_autoattack_is_no_weaker_than_the_art_composition_in_one_cell(trained_seed_cnn, cfg_factory,
                                                                                 digits):
    """Both in one evasion cell on the same 48 digits at eps 0.1, both at 10 iterations and 100 Square queries:
    the reference (any iterate that fools counts, FAB-T added) is at most the ART composition plus binomial noise."""
    art = {"max_iter": 10, "step_fraction": 2.0, "random_restarts": 1, "targets": 9, "square_queries": 100,
           "batch_size": 250}
    cfg = cfg_factory("threat=autoattack", "threat.subset=48", "dataset.eps=[0.1]")
    cfg.threat.attacks = [{"name": "autoattack_standard", **CPU_BUDGET}, {"name": "autoattack_art_standard", **art}]
    m = build_threat(cfg.threat).evaluate(copy.deepcopy(trained_seed_cnn), digits, CPU, seed=0).metrics
    reference, composition = m["robust/autoattack_standard/eps_0.1"], m["robust/autoattack_art_standard/eps_0.1"]
    n = m["robust/subset_size"]
    assert n == 48
    noise = 2 * math.sqrt(max(composition * (1 - composition), 1 / n) / n)
    assert reference <= composition + noise, (reference, composition, noise)
    assert reference < m["robust/subset_clean_acc"] - 0.2  # it attacks: eps 0.1 breaks a plain CNN's digits
    assert m["robust/worst/eps_0.1"] <= min(reference, composition)


def test_reference_autoattack_runs_its_budget_inside_the_ball_and_keeps_torch_rng(trained_seed_cnn, digits,
                                                                                   monkeypatch):
    from pyautoattack.autopgd_base import APGDAttack, APGDAttack_targeted
    from pyautoattack.fab_base import FABAttack
    from pyautoattack.square import SquareAttack

    seen = []  # (attack class, iterations / queries it ran with)
    for cls, budget in ((APGDAttack, "n_iter"), (APGDAttack_targeted, "n_iter"), (FABAttack, "n_iter"), (SquareAttack, "n_queries")):
        original = cls.perturb

        def recording(self, *args, _original=original, _budget=budget, **kwargs):
            seen.append((type(self).__name__, getattr(self, _budget), getattr(self, "n_iter_2", None)))
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(cls, "perturb", recording)
    x, y = to_numpy(digits.x_test[:24]), digits.y_test[:24].numpy()
    classifier = art_classifier(copy.deepcopy(trained_seed_cnn), tuple(x.shape[1:]), 10, CPU)
    attack = ATTACKS["autoattack_standard"].build(classifier, 0.1, OmegaConf.create(CPU_BUDGET))
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    np.random.seed(0)
    x_adv = attack.generate(x, y)
    assert torch.equal(torch.random.get_rng_state(), state)  # the reference reseeds torch inside, undone after
    assert np.abs(x_adv - x).max() <= 0.1 + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    assert (classifier.predict(x_adv).argmax(1) == y).mean() <= (classifier.predict(x).argmax(1) == y).mean() - 0.2
    # eps 0.1 leaves images for every attack of the composition, in the reference's order
    assert [name for name, _, _ in seen] == ["APGDAttack", "APGDAttack_targeted", "FABAttack_PT", "SquareAttack"]
    for name, budget, checkpoint in seen:  # APGD's first step-size checkpoint follows its iterations (22%)
        assert budget == (100 if name == "SquareAttack" else 10) and checkpoint in (None, 2), (name, budget)
    np.random.seed(0)
    assert np.array_equal(attack.generate(x, y), x_adv)  # same cell seed, same output


def _linear_model_and_points(n=40, side=4, seed=0):
    """Two logits, [0, w.x + b]: image x's smallest perturbation to the other class is |w.x + b| / ||w||_q
    (q = 1 for L-inf, q = 2 for L2) when the box [0, 1] does not bind; points are kept where it cannot."""
    g = torch.Generator().manual_seed(seed)
    d = side * side
    w = torch.randn(d, generator=g)
    x = 0.5 + 0.1 * (2 * torch.rand(n, 1, side, side, generator=g) - 1)
    z = x.flatten(1) @ w
    b = -z.median()
    model = nn.Sequential(nn.Flatten(), nn.Linear(d, 2))
    with torch.no_grad():
        model[1].weight.copy_(torch.stack([torch.zeros(d), w]))
        model[1].bias.copy_(torch.tensor([0.0, float(b)]))
    margin = (z + b).abs()
    minimal = {"linf": margin / w.abs().sum(), "l2": margin / w.norm()}
    keep = (minimal["l2"] < 0.35) & (margin > 1e-3)
    y = ((z + b) > 0).long()
    return model.eval(), x[keep], y[keep], {k: v[keep].numpy() for k, v in minimal.items()}


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_fmn_finds_a_linear_models_known_minimal_perturbation(norm):
    model, x, y, minimal = _linear_model_and_points()
    classifier = art_classifier(model, tuple(x.shape[1:]), 2, CPU)
    # secml-torch's FMN leaves the ball unbounded until its first adversarial, which is far from a linear model's
    # boundary; 1,000 steps shrink the ball to it (100 leave a median of 3x the minimum here)
    p = OmegaConf.create({"max_iter": 1000, "step_size": 1.0, "gamma": 0.05, "batch_size": 64})
    x_adv = ATTACKS[f"fmn_{norm}"].build(classifier, None, p).generate(to_numpy(x), y.numpy())
    assert (classifier.predict(x_adv).argmax(1) != y.numpy()).all()  # every image flipped
    found = np.linalg.norm((x_adv - to_numpy(x)).reshape(len(x), -1), ord=np.inf if norm == "linf" else 2, axis=1)
    assert (found >= minimal[norm] * (1 - 1e-4)).all()  # none below the minimum: it exists only above it
    assert (found <= minimal[norm] * 1.01).all(), np.max(found / minimal[norm])  # and FMN gets within 1% of it


def test_the_evasion_threat_reads_fmn_linf_off_in_the_linf_norm():
    """Robust at eps exactly when FMN found no adversarial of L-inf norm <= eps (its L2 norm is ~4x larger here,
    so reading the L2 norm would call most images robust), and the per-image radii become a security curve."""
    model, x, y, minimal = _linear_model_and_points()
    classifier = art_classifier(model, tuple(x.shape[1:]), 2, CPU)
    eps = [0.0, float(np.median(minimal["linf"])), float(minimal["linf"].max() * 1.2)]
    threat = EvasionThreat(OmegaConf.create({"eps": eps, "eps_l2": [1.0], "subset": len(x)}))
    params = OmegaConf.create({"name": "fmn_linf", "max_iter": 1000, "step_size": 1.0, "gamma": 0.05,
                               "batch_size": 64})
    x_np, y_np = to_numpy(x), y.numpy()
    out, _ = threat._run(ATTACKS["fmn_linf"], params, classifier, x_np, y_np, np.ones(len(x), bool), seed=0,
                         keys=np.arange(len(x)))
    radii = threat.robust_radii["fmn_linf"]
    assert np.allclose(radii, minimal["linf"], rtol=0.01)
    assert out[0.0].all() and not out[eps[2]].any()
    assert np.array_equal(out[eps[1]], radii > eps[1] * (1 + 1e-6))
    assert 0.3 <= out[eps[1]].mean() <= 0.7  # the median eps splits the images


@pytest.mark.parametrize("name, loss, targets", [("apgd_linf", "ce", 1), ("apgd_linf", "dlr", 1),
                                                 ("apgd_linf", "dlr_targeted", 9), ("apgd_t_linf", None, 9)])
def test_reference_apgd_runs_its_loss_and_budget_inside_the_ball_and_keeps_torch_rng(trained_seed_cnn, digits,
                                                                                      monkeypatch, name, loss, targets):
    """The wrapper hands the reference its loss (apgd_t_*: the targeted DLR), iterations (with their step-size
    checkpoints), restarts and at most C - 1 target classes, batch by batch; what it returns stays in the ball and
    breaks a plain CNN's digits."""
    from pyautoattack.autopgd_base import APGDAttack

    seen = []  # (loss, iterations, first checkpoint, restarts, targets, batch) per perturb call
    original = APGDAttack.attack_single_run

    def recording(self, x, y, *args, **kwargs):
        seen.append((self.loss, self.n_iter, self.n_iter_2, self.n_restarts, getattr(self, "n_target_classes", 1),
                     len(x)))
        return original(self, x, y, *args, **kwargs)

    monkeypatch.setattr(APGDAttack, "attack_single_run", recording)
    x, y = to_numpy(digits.x_test[:30]), digits.y_test[:30].numpy()
    classifier = art_classifier(copy.deepcopy(trained_seed_cnn), tuple(x.shape[1:]), 10, CPU)
    p = OmegaConf.create({"name": name, **({"loss": loss} if loss else {}), "max_iter": 10, "random_restarts": 2,
                          "target_classes": 20, "batch_size": 16})
    attack = ATTACKS[name].build(classifier, 0.2, p)
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    np.random.seed(0)
    x_adv = attack.generate(x, y)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert np.abs(x_adv - x).max() <= 0.2 + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    assert (classifier.predict(x_adv).argmax(1) == y).mean() <= 0.2
    reference_loss = {"ce": "ce", "dlr": "dlr", "dlr_targeted": "dlr-targeted", None: "dlr-targeted"}[loss]
    assert {(s[0], s[1], s[2], s[4]) for s in seen} == {(reference_loss, 10, 2, targets)}
    assert max(s[5] for s in seen) <= 16  # batches of batch_size; restarts and targets rerun what is left
    np.random.seed(0)
    assert np.array_equal(attack.generate(x, y), x_adv)  # same cell seed, same output


def test_apgd_budget_counts_steps_restarts_and_targets():
    from attacks.evasion import pgd_budget

    p = {"name": "apgd_linf", "max_iter": 20, "random_restarts": 2, "target_classes": 3}
    assert pgd_budget(OmegaConf.create({**p, "loss": "dlr"})) == 40
    assert pgd_budget(OmegaConf.create({**p, "loss": "dlr_targeted"})) == 120
    assert pgd_budget(OmegaConf.create({**p, "name": "apgd_t_linf"})) == 120


@pytest.mark.parametrize("entry", [{"name": "apgd_linf", "loss": "dlr_targeted"}, {"name": "apgd_t_linf"}])
def test_targeted_apgd_without_target_classes_runs_the_documented_default(trained_seed_cnn, digits, monkeypatch,
                                                                          entry):
    """target_classes is optional (the config model's default, the reference's 9): an entry without it is valid
    and runs 9 targets (at most C - 1) with a budget of steps x restarts x 9."""
    from pyautoattack.autopgd_base import APGDAttack_targeted

    from attacks.evasion import pgd_budget
    from attacks.evasion_attacks.apgd import TARGET_CLASSES

    p = OmegaConf.create({**entry, "max_iter": 2, "random_restarts": 1, "batch_size": 16})
    EVASION_ATTACKS[p.name].config.model_validate(OmegaConf.to_container(p))
    assert pgd_budget(p) == 2 * TARGET_CLASSES
    seen = []
    original = APGDAttack_targeted.perturb
    monkeypatch.setattr(APGDAttack_targeted, "perturb",
                        lambda self, x, y: seen.append(self.n_target_classes) or original(self, x, y))
    x, y = to_numpy(digits.x_test[:4]), digits.y_test[:4].numpy()
    classifier = art_classifier(copy.deepcopy(trained_seed_cnn), tuple(x.shape[1:]), 10, CPU)
    np.random.seed(0)
    ATTACKS[p.name].build(classifier, 0.1, p).generate(x, y)
    assert seen == [min(TARGET_CLASSES, 9)]
