"""Known-answer tests for the evasion breadth and certification: every attack breaks an undefended model at a
large budget, the worst case is a lower bound, the gradient-masking flag separates a masked model from a normal
one, minimal-perturbation read-out, and randomized smoothing's certificate on a model with a known answer."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn as nn
from scipy.stats import norm

from attacks import build_threat
from attacks.evasion import minimal_robust_correct
from benchmark.training import accuracy_and_loss
from benchmark.validate import ConfigError, validate

CPU = torch.device("cpu")


def _strong(cfg_factory, *overrides):
    """threat=strong on a tiny prefix of the digits test set."""
    return cfg_factory("threat=strong", "threat.subset=40", "threat.attacks.3.subset=40", "threat.attacks.4.subset=40",
                       "threat.attacks.5.subset=20", "threat.attacks.6.subset=20", "threat.attacks.3.max_iter=100",
                       "threat.attacks.4.max_iter=10", "threat.attacks.4.square_queries=50", *overrides)


def test_pgd_breaks_an_undefended_model_and_robust_accuracy_falls_with_eps(trained_seed_cnn, cfg_factory, digits):
    cfg = cfg_factory("threat=evasion", "threat.subset=200", "dataset.eps=[0.0,0.05,0.1,0.2,0.3]")
    report = build_threat(cfg.threat).evaluate(copy.deepcopy(trained_seed_cnn), digits, CPU, seed=0)
    clean, _ = accuracy_and_loss(trained_seed_cnn, digits.x_test, digits.y_test, CPU)
    assert clean > 0.85
    for attack in ("fgsm", "pgd_linf"):
        curve = [report.metrics[f"robust/{attack}/eps_{e:g}"] for e in (0.0, 0.05, 0.1, 0.2, 0.3)]
        assert curve[0] == pytest.approx(report.metrics["robust/subset_clean_acc"])
        assert all(a >= b for a, b in zip(curve, curve[1:])), (attack, curve)
    assert report.metrics["robust/pgd_linf/eps_0.3"] < 0.1 < 0.85 < clean
    # PGD is at least as strong as FGSM here (no gradient masking on a plain CNN)
    assert report.metrics["robust/pgd_linf/eps_0.1"] <= report.metrics["robust/fgsm/eps_0.1"]
    # per image over both attacks on the same images: no better than either
    assert report.metrics["robust/worst/eps_0.1"] <= report.metrics["robust/pgd_linf/eps_0.1"]


def test_every_attack_drives_an_undefended_model_far_below_clean(trained_seed_cnn, cfg_factory, digits):
    cfg = _strong(cfg_factory, "dataset.eps=[0.3]", "dataset.eps_l2=[3.0]")
    report = build_threat(cfg.threat).evaluate(copy.deepcopy(trained_seed_cnn), digits, CPU, seed=0)
    m = report.metrics
    clean = m["robust/subset_clean_acc"]
    assert clean > 0.85
    linf = ["fgsm", "pgd_linf", "square_linf", "autoattack_linf"]
    l2 = ["pgd_l2", "cw_l2", "deepfool"]
    for name in linf[1:]:
        assert m[f"robust/{name}/eps_0.3"] <= 0.15, (name, m[f"robust/{name}/eps_0.3"])
    for name in l2:
        assert m[f"robust/{name}/eps_3"] <= 0.15, (name, m[f"robust/{name}/eps_3"])
    # the per-image worst case is measured on the images every attack of its norm saw, and is a lower bound of
    # each attack that ran on exactly those images
    assert m["robust/worst/subset_size"] == 40 and m["robust/worst_l2/subset_size"] == 20
    assert m["robust/worst/eps_0.3"] <= min(m[f"robust/{n}/eps_0.3"] for n in linf)
    assert m["robust/worst_l2/eps_3"] <= min(m[f"robust/{n}/eps_3"] for n in ("cw_l2", "deepfool"))
    assert m["attack/pgd_linf/budget"] == 20 * 2 and "robust/convergence_gap/eps_0.3" not in m  # off by default
    # black-box query budget and the measured model calls are logged; per-attack subsets are reported
    assert m["attack/square_linf/query_budget"] == 100
    assert 1 <= m["attack/square_linf/queries_per_image"] <= 3 * 100
    assert m["attack/cw_l2/subset_size"] == 20
    assert m["robust/gradient_masking_flag"] == 0.0  # a normal model: PGD beats FGSM and Square


def test_art_standard_autoattack_is_the_worst_case_of_its_steps_within_the_ball(trained_seed_cnn, digits,
                                                                              monkeypatch):
    """ART's rebuild of the standard composition: APGD-CE first, then targeted APGD-DLR against the likeliest other classes, then Square, each on the images
    still robust: at least as strong as its first step alone (same seed), every output inside the eps-ball."""
    from art.attacks.evasion import AutoProjectedGradientDescent
    from omegaconf import OmegaConf

    from attacks.art_classifier import art_classifier, to_numpy
    from attacks.evasion_attacks.autoattack_art_standard import ArtStandardAutoAttack

    p = OmegaConf.create({"max_iter": 10, "step_fraction": 2.0, "random_restarts": 1, "targets": 3,
                          "square_queries": 20, "batch_size": 100})
    x, y = to_numpy(digits.x_test[:60]), digits.y_test[:60].numpy()
    classifier = art_classifier(copy.deepcopy(trained_seed_cnn), tuple(x.shape[1:]), 10, CPU)
    runs = []  # (targeted, images attacked, labels or targets)
    original = AutoProjectedGradientDescent.generate

    def recording(self, x, y=None, **kwargs):
        runs.append((self.targeted, x.copy(), np.asarray(y).copy()))
        return original(self, x, y, **kwargs)

    monkeypatch.setattr(AutoProjectedGradientDescent, "generate", recording)
    np.random.seed(0)
    x_std = ArtStandardAutoAttack(classifier, 0.1, p).generate(x, y)
    np.random.seed(0)
    x_ce = ArtStandardAutoAttack(classifier, 0.1, OmegaConf.merge(p, {"targets": 0})).generate(x, y)
    assert np.abs(x_std - x).max() <= 0.1 + 1e-6 and x_std.min() >= 0 and x_std.max() <= 1
    correct = lambda adv: int((classifier.predict(adv).argmax(1) == y).sum())  # noqa: E731
    assert correct(x_std) <= correct(x_ce) < correct(x)
    assert [targeted for targeted, _, _ in runs[:4]] == [False, True, True, True]
    # the k-th targeted run aims each image it attacks at that image's k-th likeliest non-true class
    ranked = np.argsort(-classifier.predict(x), axis=1)
    others = np.stack([row[row != label] for row, label in zip(ranked, y)])
    for k, (_, images, targets) in enumerate(runs[1:4]):
        rows = [int(np.flatnonzero((x == image).all(axis=(1, 2, 3)))[0]) for image in images]
        assert np.array_equal(targets, others[rows, k])


def test_worst_case_counts_an_image_only_if_it_survives_every_attack_on_the_images_all_attacked():
    from attacks.evasion import worst_case

    correct = {("pgd_linf", 0.1): np.array([1, 1, 0, 1], bool), ("square_linf", 0.1): np.array([1, 0, 1], bool),
               ("pgd_l2", 1.0): np.array([0, 1], bool)}
    assert worst_case(correct, "linf") == {0.1: (pytest.approx(1 / 3), 3)}  # the first 3 images
    assert worst_case(correct, "l2") == {1.0: (0.5, 2)}


class _ReadsLabelPixels(nn.Module):
    """Predicts the class whose pixel (the first `classes` pixels of the image) is brightest: a model whose every
    output an attack stub can set exactly."""

    def __init__(self, classes: int = 10):
        super().__init__()
        self.classes, self.anchor = classes, nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return 100 * x.flatten(1)[:, : self.classes] + self.anchor


def _label_image(labels) -> torch.Tensor:
    """4x4 images whose first 10 pixels one-hot encode `labels` (what _ReadsLabelPixels predicts)."""
    x = torch.zeros(len(labels), 1, 4, 4)
    x.view(len(labels), -1)[torch.arange(len(labels)), torch.as_tensor(labels)] = 1.0
    return x


class _Relabel:
    """An attack stub: image i of the batch it is given comes out classified as `outcome(i, y_i)`."""

    def __init__(self, outcome):
        self.outcome = outcome

    def generate(self, x, y):
        labels = [self.outcome(i, int(label)) for i, label in enumerate(y)]
        return _label_image(labels).numpy()


def _stub_evaluation(monkeypatch, clean_labels, true_labels, attacks: dict[str, tuple[int, object]]):
    """EvasionThreat.evaluate on a dataset whose clean predictions are `clean_labels`, with stub attacks
    name -> (subset, outcome); the cell's subset is every test image, in a seeded order that the stub sees."""
    from omegaconf import OmegaConf

    from attacks.evasion_attacks import EVASION_ATTACKS
    from benchmark.data import Dataset

    for name, (_, outcome) in attacks.items():  # temporary plugins, removed below
        EVASION_ATTACKS.register(name, norm="linf", role="iterative")(lambda _c, _e, _p, o=outcome: _Relabel(o))
    x = _label_image(clean_labels)
    y = torch.as_tensor(true_labels)
    data = Dataset("stub", x, y, x, y, 10)
    cfg = OmegaConf.create({"name": "stub", "kind": "evasion", "subset": len(y), "eps": [0.1], "attacks": [
        {"name": name, "subset": subset, "batch_size": 50, "max_iter": 1} for name, (subset, _) in attacks.items()]})
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))  # eval_subset's seeded order
    try:
        return build_threat(cfg).evaluate(_ReadsLabelPixels(), data, CPU, seed=0).metrics, order
    finally:
        for name in attacks:
            EVASION_ATTACKS.unregister(name)


def test_an_attack_that_fixes_a_misclassified_image_does_not_make_it_robust(monkeypatch):
    truth = list(range(10))
    clean = [label if label < 4 else (label + 1) % 10 for label in truth]  # 4 of 10 right on the clean image
    m, _ = _stub_evaluation(monkeypatch, clean, truth, {"fixer": (10, lambda _i, label: label)})  # all right after
    assert m["robust/subset_clean_acc"] == pytest.approx(0.4)
    assert m["robust/fixer/eps_0.1"] == pytest.approx(0.4) and m["robust/worst/eps_0.1"] == pytest.approx(0.4)


def test_worst_case_is_per_image_on_the_images_every_attack_saw_not_the_lowest_attack(monkeypatch):
    truth = [i % 10 for i in range(8)]
    # in the order the cell attacks them: A breaks images 0 and 1 of 8, B (first 4 only) breaks image 2
    a = (8, lambda i, label: (label + 1) % 10 if i in (0, 1) else label)
    b = (4, lambda i, label: (label + 1) % 10 if i == 2 else label)
    m, _ = _stub_evaluation(monkeypatch, truth, truth, {"attack_a": a, "attack_b": b})
    assert m["robust/attack_a/eps_0.1"] == pytest.approx(0.75) and m["robust/attack_b/eps_0.1"] == pytest.approx(0.75)
    # per image on the first 4: images 0, 1 (A) and 2 (B) are broken; the lowest single attack would say 0.75
    assert m["robust/worst/eps_0.1"] == pytest.approx(0.25) and m["robust/worst/subset_size"] == 4


def test_convergence_check_reruns_pgd_at_larger_budgets_and_logs_the_gap(trained_seed_cnn, cfg_factory, digits):
    cfg = cfg_factory("threat=pgd", "threat.subset=60", "dataset.eps=[0.0,0.1]", "threat.attacks.0.max_iter=1",
                      "threat.attacks.0.step_fraction=0.5",
                      "threat.convergence={multipliers: [2, 4], scale: steps, seeds: [0]}")
    validate(cfg)
    m = build_threat(cfg.threat).evaluate(copy.deepcopy(trained_seed_cnn), digits, CPU, seed=0).metrics
    for multiplier in (2, 4):
        gap = m[f"robust/convergence_gap_x{multiplier}/eps_0.1"]
        assert gap == pytest.approx(m["robust/pgd_linf/eps_0.1"] - m[f"robust/pgd_linf_x{multiplier}/eps_0.1"])
        assert m[f"robust/convergence_gap_x{multiplier}/eps_0"] == 0.0  # eps 0 is the clean point at every budget
    assert m["robust/convergence_gap/eps_0.1"] == m["robust/convergence_gap_x4/eps_0.1"]
    # one step of 0.05 cannot reach the eps ball's surface, four steps can: the larger budget finds more
    assert m["robust/convergence_gap/eps_0.1"] > 0.05
    other_seed = build_threat(cfg.threat).evaluate(copy.deepcopy(trained_seed_cnn), digits, CPU, seed=1).metrics
    assert not any(k.startswith("robust/convergence") for k in other_seed)  # `seeds` limits it to seed 0


def test_convergence_budgets_scale_the_random_starts_or_the_steps():
    from omegaconf import OmegaConf

    from attacks.evasion import pgd_budget, scaled_budget

    pgd = OmegaConf.create({"name": "pgd_linf", "max_iter": 20, "step_fraction": 0.1, "random_restarts": 2})
    assert pgd_budget(pgd) == 40
    assert pgd_budget(scaled_budget(pgd, 4, "restarts")) == pgd_budget(scaled_budget(pgd, 4, "steps")) == 160
    assert scaled_budget(pgd, 4, "restarts").random_restarts == 8 and scaled_budget(pgd, 4, "steps").max_iter == 80
    no_start = OmegaConf.create({"name": "pgd_linf", "max_iter": 10, "random_restarts": 0})  # ART: one start from x
    assert pgd_budget(no_start) == 10 and pgd_budget(scaled_budget(no_start, 2, "restarts")) == 20


def _quantized(model: nn.Module, levels: int = 4) -> nn.Module:
    class Quantize(nn.Module):  # round() has zero gradient almost everywhere: gradient-based attacks see nothing
        def forward(self, x):
            return torch.round(x * levels) / levels

    return nn.Sequential(Quantize(), copy.deepcopy(model))


def test_gradient_masking_flag_fires_on_input_quantization_not_on_the_plain_model(trained_seed_cnn, cfg_factory, digits):
    cfg = cfg_factory("threat=strong", "threat.subset=60", "dataset.eps=[0.2,0.3]",
                      "threat.attacks=[{name: fgsm, batch_size: 250}, {name: pgd_linf, max_iter: 10, step_fraction: 0.25,"
                      " random_restarts: 1, batch_size: 250}, {name: square_linf, max_iter: 50, p_init: 0.8, restarts: 1,"
                      " batch_size: 250}]")
    plain = build_threat(cfg.threat).evaluate(copy.deepcopy(trained_seed_cnn), digits, CPU, seed=0).metrics
    masked = build_threat(cfg.threat).evaluate(_quantized(trained_seed_cnn), digits, CPU, seed=0).metrics
    assert plain["robust/gradient_masking_flag"] == 0.0 and plain["robust/gradient_masking_margin"] <= 0.02
    assert masked["robust/gradient_masking_flag"] == 1.0
    assert masked["robust/gradient_masking_margin"] > 0.3  # PGD is blind, the black-box attack is not
    assert masked["robust/pgd_linf/eps_0.3"] > 0.7 > 0.2 > masked["robust/square_linf/eps_0.3"]
    assert masked["robust/worst/eps_0.3"] <= masked["robust/square_linf/eps_0.3"]  # the worst case is not fooled


def test_minimal_attack_readout_counts_an_image_broken_only_within_budget():
    correct_adv = np.array([False, False, True, False])  # the attack flipped images 0, 1 and 3
    norms = np.array([0.5, 2.0, 0.0, 1.0])
    assert minimal_robust_correct(correct_adv, norms, 1.0).tolist() == [False, True, True, False]
    assert minimal_robust_correct(correct_adv, norms, 0.4).tolist() == [True, True, True, True]


class _Constant(nn.Module):
    """Predicts class `c` for every input, noise or not."""

    def __init__(self, c: int, classes: int = 10):
        super().__init__()
        self.c, self.classes, self.anchor = c, classes, nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return nn.functional.one_hot(torch.full((len(x),), self.c), self.classes).float() * 10 + self.anchor


def test_smoothing_certifies_a_constant_model_with_the_clopper_pearson_radius(cfg_factory, digits):
    cfg = cfg_factory("threat=smoothing", "threat.subset=30", "threat.n_certify=50", "threat.n_select=8",
                      "threat.radii=[0.0,0.25,0.5]", "threat.sigma=0.25")
    threat = build_threat(cfg.threat)
    x = digits.x_test[:30].numpy()
    pred, radius = threat.certify(_Constant(3), x, digits, CPU, seed=0)
    # every noisy sample votes 3: the one-sided (1 - alpha) lower bound of p is alpha^(1/n)
    assert (pred == 3).all()
    assert radius == pytest.approx(np.full(30, 0.25 * norm.ppf(0.001 ** (1 / 50))), rel=1e-6)
    report = threat.evaluate(_Constant(3), digits, CPU, seed=0)
    from benchmark.data import eval_subset

    share = float((eval_subset(digits, 30, 0)[1] == 3).float().mean())
    assert report.metrics["certified/acc/r_0"] == pytest.approx(share)
    assert report.metrics["certified/acc/r_0.25"] == pytest.approx(share)  # radius 0.25 * 1.13 = 0.28 >= 0.25
    assert report.metrics["certified/acc/r_0.5"] == 0.0
    assert [s for name, _, s in report.curves if name == "certified_curve/sigma_0.25"] == [0, 250, 500]


def test_smoothed_trained_model_certifies_less_at_larger_radius(trained_seed_cnn, cfg_factory, digits):
    cfg = cfg_factory("threat=smoothing", "threat.subset=40", "threat.n_certify=100", "threat.radii=[0.0,0.2,0.4,1.0]")
    m = build_threat(cfg.threat).evaluate(copy.deepcopy(trained_seed_cnn), digits, CPU, seed=0).metrics
    curve = [m[f"certified/acc/r_{r:g}"] for r in (0.0, 0.2, 0.4, 1.0)]
    assert curve == sorted(curve, reverse=True)
    assert curve[0] > 0.5 and curve[-1] == 0.0  # n=100 caps the radius at 0.25 * Phi^-1(0.001^(1/100)) = 0.37
    assert 0 <= m["certified/abstain_rate"] < 0.5 and 0 < m["certified/mean_radius"] < 0.4


@pytest.mark.parametrize("override, key", [
    ("dataset.eps_l2=[]", "threat.attacks[2].name"),
    ("threat.attacks.4.components=[apgd_ce,fab]", "threat.attacks[4].components[1]"),
    ("threat.attacks.3.subset=0", "threat.attacks[3].subset"),
    ("threat.masking_tolerance=2", "threat.masking_tolerance"),
    ("threat.convergence={multipliers: [1]}", "threat.convergence.multipliers[0]"),
    ("threat.convergence={multipliers: [2.5]}", "threat.convergence.multipliers[0]"),
    ("eval.collapse_margin=-0.1", "eval.collapse_margin"),
    ("threat.convergence={multipliers: [2], scale: iterations}", "threat.convergence.scale"),
])
def test_strong_threat_config_errors_name_the_key(cfg_factory, override, key):
    with pytest.raises(ConfigError, match=key.replace("[", r"\[").replace("]", r"\]")):
        validate(cfg_factory("threat=strong", override))


def test_smoothing_config_errors_name_the_key(cfg_factory):
    with pytest.raises(ConfigError, match="threat.sigma"):
        validate(cfg_factory("threat=smoothing", "threat.sigma=0"))


def test_a_model_at_chance_is_collapsed_and_a_trained_one_is_not(trained_seed_cnn, digits):
    from benchmark.measure import collapse_metrics
    from benchmark.training import accuracy_and_loss

    chance = int(torch.bincount(digits.y_test).max()) / len(digits.y_test)
    constant, _ = accuracy_and_loss(_Constant(3), digits.x_test, digits.y_test, CPU)  # its class's share: <= chance
    assert collapse_metrics(constant, digits.y_test, 0.05) == {"clean/chance": chance, "clean/collapsed": 1.0}
    trained, _ = accuracy_and_loss(trained_seed_cnn, digits.x_test, digits.y_test, CPU)
    assert collapse_metrics(trained, digits.y_test, 0.05)["clean/collapsed"] == 0.0
    # the margin is the configured one: just above chance + margin is not collapsed, at it is
    assert collapse_metrics(chance + 0.1, digits.y_test, 0.1)["clean/collapsed"] == 1.0
    assert collapse_metrics(chance + 0.11, digits.y_test, 0.1)["clean/collapsed"] == 0.0


def _pgd(classifier, eps, step_fraction, max_iter, restarts):
    from art.attacks.evasion import ProjectedGradientDescent

    return ProjectedGradientDescent(classifier, norm=np.inf, eps=eps, eps_step=eps * step_fraction, max_iter=max_iter,
                                    num_random_init=restarts, batch_size=50, verbose=False)


def test_any_iterate_pgd_breaks_every_image_its_final_iterate_breaks_and_more(trained_seed_cnn, digits):
    """One run, so the same images and random starts: its output (the final iterate) is one of the iterates judged,
    so every image the output fools is counted; a step twice the ball's radius makes PGD bounce between corners,
    so some images are fooled only by an earlier iterate."""
    from attacks.any_iterate import AnyIteratePGD
    from attacks.art_classifier import art_classifier, frozen_parameters, to_numpy

    model = copy.deepcopy(trained_seed_cnn).eval()
    x, y = to_numpy(digits.x_test), digits.y_test.numpy()
    with frozen_parameters(model):
        classifier = art_classifier(model, x.shape[1:], digits.num_classes, CPU)
        for restarts in (0, 2):
            pgd = AnyIteratePGD.like(_pgd(classifier, 0.1, 2.0, 10, restarts))
            final = classifier.predict(pgd.generate(x=x, y=y, seed=0)).argmax(1) != y
            assert np.all(pgd.fooled[final]), restarts
            assert (pgd.fooled & ~final).any(), restarts  # the rule matters on this model


def test_random_starts_are_per_image_whatever_else_is_attacked(trained_seed_cnn, digits):
    """An image's starts follow its key and the seed, not its batch: attacked alone or among others, it is fooled
    the same way; another seed draws other starts."""
    from attacks.any_iterate import random_starts

    x = digits.x_test[:6]
    together = random_starts(x, [10, 11, 12, 13, 14, 15], 0.1, seed=0, restart=1)
    alone = random_starts(x[3:4], [13], 0.1, seed=0, restart=1)
    assert torch.equal(together[3:4], alone)
    assert not torch.equal(random_starts(x[3:4], [13], 0.1, seed=1, restart=1), alone)
    assert not torch.equal(random_starts(x[3:4], [13], 0.1, seed=0, restart=0), alone)
    assert ((together - x).abs().max() <= 0.1 + 1e-6) and together.min() >= 0 and together.max() <= 1


def test_robust_accuracy_is_monotone_in_eps_and_never_above_final_iterate_pgd(trained_seed_cnn, cfg_factory, digits):
    """The cell's PGD curve, eps given out of order: per image, robust at a larger eps implies robust at every
    smaller one; with starts at the clean image (no random start) each eps's accuracy is at most the final-iterate
    PGD's on the same images."""
    from attacks.art_classifier import art_classifier, frozen_parameters
    from benchmark.data import eval_subset
    from attacks.per_image import PER_IMAGE_ARTIFACT

    eps = [0.2, 0.05, 0.0, 0.1, 0.3]
    cfg = cfg_factory("threat=pgd", "threat.subset=150", f"dataset.eps=[{','.join(map(str, eps))}]",
                      "threat.attacks.0.random_restarts=0", "threat.attacks.0.step_fraction=1.0")
    report = build_threat(cfg.threat).evaluate(copy.deepcopy(trained_seed_cnn), digits, CPU, seed=0)
    flags = report.artifacts[PER_IMAGE_ARTIFACT]["robust"]["pgd_linf"]
    ordered = [np.array([c == "1" for c in flags[f"{e:g}"]]) for e in sorted(eps)]
    for smaller, larger in zip(ordered, ordered[1:]):
        assert np.all(smaller[larger])
    assert ordered[1].sum() > ordered[-1].sum()  # the curve falls: the monotonicity above is not vacuous

    model = copy.deepcopy(trained_seed_cnn).eval()
    x, y = (t.numpy() for t in eval_subset(digits, 150, 0))
    with frozen_parameters(model):
        classifier = art_classifier(model, x.shape[1:], digits.num_classes, CPU)
        clean_ok = classifier.predict(x).argmax(1) == y
        for e in sorted(eps)[1:]:
            final = clean_ok & (classifier.predict(_pgd(classifier, e, 1.0, 10, 0).generate(x=x, y=y)).argmax(1) == y)
            assert report.metrics[f"robust/pgd_linf/eps_{e:g}"] <= final.mean() + 1e-12, e


def test_each_eps_attacks_only_the_images_still_robust():
    """Stub attacks: the images each eps sees are the ones robust at the eps below; an image broken at 0.1 stays
    broken at 0.2 although the attack at 0.2 (which never sees it) would leave it alone."""
    from omegaconf import OmegaConf

    from attacks.evasion_attacks import EVASION_ATTACKS
    from benchmark.data import Dataset

    seen: dict[float, int] = {}

    class Breaks:  # at eps 0.1 breaks the first image it is given; at 0.2 the first two; nothing at 0.05
        def __init__(self, eps):
            self.eps = eps

        def generate(self, x, y):
            seen[self.eps] = len(x)
            broken = {0.05: 0, 0.1: 1, 0.2: 2}[self.eps]
            labels = [(int(label) + 1) % 10 if i < broken else int(label) for i, label in enumerate(y)]
            return _label_image(labels).numpy()

    EVASION_ATTACKS.register("stub", norm="linf", role="iterative")(lambda _c, eps, _p: Breaks(eps))
    truth = [i % 10 for i in range(10)]
    clean = [label if i < 8 else (label + 1) % 10 for i, label in enumerate(truth)]  # 8 right on the clean image
    x, y = _label_image(clean), torch.as_tensor(truth)
    cfg = OmegaConf.create({"name": "stub", "kind": "evasion", "subset": 10, "eps": [0.2, 0.05, 0.1],
                            "attacks": [{"name": "stub", "batch_size": 50, "max_iter": 1}]})
    try:
        m = build_threat(cfg).evaluate(_ReadsLabelPixels(), Dataset("stub", x, y, x, y, 10), CPU, seed=0).metrics
    finally:
        EVASION_ATTACKS.unregister("stub")
    assert seen == {0.05: 8, 0.1: 8, 0.2: 7}
    assert [m[f"robust/stub/eps_{e}"] for e in (0.05, 0.1, 0.2)] == pytest.approx([0.8, 0.7, 0.5])
    assert [m[f"robust/worst/eps_{e}"] for e in (0.05, 0.1, 0.2)] == pytest.approx([0.8, 0.7, 0.5])


def test_worst_case_is_monotone_in_eps():
    from attacks.evasion import worst_case

    robust = {("pgd_linf", 0.1): np.array([1, 0, 1, 1], bool), ("pgd_linf", 0.2): np.array([1, 1, 0, 1], bool),
              ("fgsm", 0.1): np.array([1, 1, 1, 0], bool), ("fgsm", 0.2): np.array([1, 1, 1, 1], bool)}
    # images 1 and 3, broken at 0.1, stay broken at 0.2 (the attacks at 0.2 alone would leave 3 of 4 standing)
    assert worst_case(robust, "linf") == {0.1: (0.5, 4), 0.2: (0.25, 4)}


def test_a_survivors_only_attack_sees_only_what_the_earlier_attacks_left_robust():
    """Stubs that break images by label: `second` (survivors_only) sees, at each eps, only the images robust under
    `first` there and under itself at the eps below; its numbers are the two attacks' together."""
    from omegaconf import OmegaConf

    from attacks.evasion_attacks import EVASION_ATTACKS
    from benchmark.data import Dataset

    seen: dict[tuple[str, float], list[int]] = {}

    def stub(name, breaks):
        class Breaks:
            def __init__(self, eps):
                self.eps = eps

            def generate(self, x, y):
                seen[(name, self.eps)] = sorted(int(label) for label in y)
                return _label_image([(int(v) + 1) % 10 if int(v) in breaks[self.eps] else int(v) for v in y]).numpy()

        EVASION_ATTACKS.register(name, norm="linf", role="iterative")(lambda _c, eps, _p: Breaks(eps))

    stub("first", {0.1: {0}, 0.2: {1}})
    stub("second", {0.1: {2}, 0.2: {3}})
    truth = list(range(10))
    clean = [label if i < 8 else (label + 1) % 10 for i, label in enumerate(truth)]  # 8 right on the clean image
    x, y = _label_image(clean), torch.as_tensor(truth)
    cfg = OmegaConf.create({"name": "stub", "kind": "evasion", "subset": 10, "eps": [0.1, 0.2],
                            "attacks": [{"name": "first", "batch_size": 50, "max_iter": 1},
                                        {"name": "second", "batch_size": 50, "max_iter": 1, "survivors_only": True}]})
    try:
        m = build_threat(cfg).evaluate(_ReadsLabelPixels(), Dataset("stub", x, y, x, y, 10), CPU, seed=0).metrics
    finally:
        EVASION_ATTACKS.unregister("first")
        EVASION_ATTACKS.unregister("second")
    assert seen[("first", 0.1)] == list(range(8)) and seen[("first", 0.2)] == list(range(1, 8))
    assert seen[("second", 0.1)] == list(range(1, 8)) and seen[("second", 0.2)] == [3, 4, 5, 6, 7]
    assert [m[f"robust/second/eps_{e}"] for e in (0.1, 0.2)] == pytest.approx([0.6, 0.4])
    assert [m[f"robust/worst/eps_{e}"] for e in (0.1, 0.2)] == pytest.approx([0.6, 0.4])
    assert "robust/gradient_masking_flag" not in m  # no weaker attack ran


def test_an_attack_listed_twice_is_a_config_error(cfg_factory):
    """Its metrics and per-image flags are keyed by its name: the second entry would silently replace the first's
    in the worst case."""
    cfg = cfg_factory("threat=evasion", "threat.attacks=[{name:fgsm,batch_size:250},{name:pgd_linf,max_iter:10,"
                      "step_fraction:0.25,random_restarts:1,batch_size:250},{name:fgsm,batch_size:100}]")
    with pytest.raises(ConfigError, match=r"^threat.attacks\[2\].name='fgsm' repeats threat.attacks\[0\]; allowed: "
                                          r"each attack once"):
        validate(cfg)


def test_survivors_only_on_a_minimal_attack_and_dlr_on_two_classes_are_config_errors(cfg_factory, tmp_path):
    from conftest import write_npz

    cfg = cfg_factory("threat=fmn", "+threat.attacks.1.survivors_only=true")
    with pytest.raises(ConfigError, match=r"threat.attacks\[1\].survivors_only=true but 'fmn_linf'"):
        validate(cfg)
    npz = write_npz(tmp_path / "two.npz", classes=2, side=16, channels=1)
    cfg = cfg_factory("dataset=npz", f"dataset.path={npz}", "threat=evasion", "dataset.eps=[0.1]")
    with pytest.raises(ConfigError, match=r"threat.attacks\[2\].name='apgd_linf' with loss='dlr' needs at least 3 "
                                          r"classes but the data has 2"):
        validate(cfg)
