"""Pruning-based backdoor defences (ANP, CLP) and what pruning makes a model forget (forget/*)."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn

from benchmark import measure, stages
from benchmark.pruning import PRUNERS, prune
from benchmark.pruning.common import PruneContext, finalize
from benchmark.pruning.methods.clp import above_mean_plus_std, channel_lipschitz, conv_before_each_batchnorm
from benchmark.pruning.neurons import (Modulation, batchnorm_pairs, largest_within_margin, neuron_layers,
                                       split_defender, switch_off)
from benchmark.training import fit
from benchmark.validate import ConfigError, validate
from models import build_model

CPU = torch.device("cpu")


def _ctx(cfg, data):
    return stages.prune_context(cfg, stages.TrainingSets.clean(data), CPU)


# ---- forget/* -------------------------------------------------------------------------------------------------
def test_forgetting_metrics_known_answer():
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    dense = torch.tensor([0, 0, 0, 1, 1, 1, 1, 1])  # class 0: 3/4 right, class 1: 4/4
    pruned = torch.tensor([0, 0, 1, 1, 1, 1, 0, 0])  # class 0: 2/4, class 1: 2/4; 3 of 8 predictions changed
    metrics = measure.forgetting_metrics(dense, pruned, labels)
    assert metrics["forget/flip_rate"] == pytest.approx(3 / 8)
    assert metrics["forget/class_acc_change/0"] == pytest.approx(-0.25)
    assert metrics["forget/class_acc_change/1"] == pytest.approx(-0.5)
    assert metrics["forget/max_class_drop"] == pytest.approx(0.5)
    same = measure.forgetting_metrics(dense, dense, labels)
    assert same["forget/flip_rate"] == 0 and same["forget/max_class_drop"] == 0
    assert "forget/class_acc_change/0" not in measure.forgetting_metrics(dense, pruned, labels, per_class_limit=1)


def test_a_cell_logs_what_it_forgot_of_its_dense_parent(cfg_factory):
    from benchmark.cell import run_cell

    off = ("eval.corruptions.enabled=false", "eval.interpret.enabled=false", "threat=fgsm", "train.epochs=2")
    unchanged = run_cell(cfg_factory("pruning=none", "finetune.epochs=0", *off)).metrics  # the dense model itself
    assert unchanged["forget/flip_rate"] == 0 and unchanged["forget/max_class_drop"] == 0
    assert all(unchanged[f"forget/class_acc_change/{k}"] == 0 for k in range(10))


# ---- neurons: which they are, switching them off, the defender's rule -------------------------------------
def test_neurons_are_batchnorm_channels_or_conv_and_hidden_units():
    bn = build_model("seed_cnn_bn", 1, 16, 10)
    layers = neuron_layers(bn)
    assert [type(layer.module) for layer in layers] == [nn.BatchNorm2d, nn.BatchNorm2d]
    assert [layer.conv for layer in layers] == [bn[0], bn[4]]
    plain_cnn = build_model("seed_cnn", 1, 16, 10)
    assert [layer.module for layer in neuron_layers(plain_cnn)] == [plain_cnn[0], plain_cnn[3]]  # convs, not the head
    plain = build_model("lenet300", 1, 16, 10)
    assert [layer.size for layer in neuron_layers(plain)] == [300, 100]  # hidden Linear units, not the head


@pytest.mark.parametrize("name", ["seed_cnn", "seed_cnn_bn"])
def test_switched_off_neurons_match_the_modulated_model_and_stay_off_through_finetuning(name, digits):
    torch.manual_seed(0)
    model = build_model(name, 1, digits.image_size, 10)
    fit(model, digits.x_train[:512], digits.y_train[:512], epochs=1, lr=1e-3, batch_size=64, seed=0, device=CPU,
        desc="test")
    layers = neuron_layers(model)
    off = [torch.arange(layer.size) % 4 == 0 for layer in layers]
    x = digits.x_test[:64]
    for zero_bias in (False, True):
        keep = [(~o).float() for o in off]
        with torch.no_grad(), Modulation(layers, keep, keep if zero_bias else [torch.ones_like(k) for k in keep]):
            expected = model.eval()(x)
        pruned = copy.deepcopy(model)
        assert switch_off(neuron_layers(pruned), off, zero_bias) == sum(int(o.sum()) for o in off)
        with torch.no_grad():
            assert torch.allclose(pruned.eval()(x), expected, atol=1e-5)
        fit(pruned, digits.x_train[:256], digits.y_train[:256], epochs=1, lr=1e-2, batch_size=64, seed=0, device=CPU,
            desc="test")
        finalize(pruned)
        for layer, flags in zip(neuron_layers(pruned), off):
            assert torch.all(layer.module.weight[flags] == 0)
            if layer.conv is not None:  # the filter feeding the BatchNorm is zero too: it counts as sparsity
                assert torch.all(layer.conv.weight[flags] == 0)
            if zero_bias:
                assert torch.all(layer.module.bias[flags] == 0)


def test_split_defender_is_disjoint_seeded_and_fails_on_one_image(digits):
    defender = (digits.x_defender, digits.y_defender)
    (x_fit, _), (x_val, _) = split_defender(defender, 0.5, seed=0)
    assert len(x_fit) + len(x_val) == len(digits.y_defender) and abs(len(x_fit) - len(x_val)) <= 1
    fit_rows = {tuple(r.flatten().tolist()) for r in x_fit}
    assert not any(tuple(r.flatten().tolist()) in fit_rows for r in x_val)
    again = split_defender(defender, 0.5, seed=0)
    assert torch.equal(again[1][0], x_val)
    with pytest.raises(ValueError, match="data.defender_size"):
        split_defender((digits.x_defender[:1], digits.y_defender[:1]), 0.5, seed=0)


def test_largest_within_margin_takes_the_most_pruning_within_the_margin():
    accuracies = {0.1: 0.99, 0.2: 0.985, 0.3: 0.95, 0.4: 0.975, 0.5: 0.5}
    assert largest_within_margin(list(accuracies), accuracies.get, baseline=1.0, margin=0.03) == (0.4, 0.975)
    assert largest_within_margin(list(accuracies), accuracies.get, baseline=1.0, margin=0.001) == (None, None)


# ---- CLP ------------------------------------------------------------------------------------------------------
def test_channel_lipschitz_known_answer():
    conv = nn.Conv2d(2, 3, 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([[3.0, 4.0], [1.0, 0.0], [0.0, -2.0]]).view(3, 2, 1, 1))
    bn = nn.BatchNorm2d(3).eval()
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([1.0, -2.0, 0.5]))
        bn.running_var.copy_(torch.tensor([4.0, 1.0, 0.25]) - bn.eps)
    layer, = batchnorm_pairs(nn.Sequential(conv, bn))[0]
    # a 1x1 kernel over 2 inputs is a 2x1 matrix: its spectral norm is the vector norm (5, 1, 2)
    assert torch.allclose(channel_lipschitz(layer), torch.tensor([5 * 1 / 2, 1 * 2 / 1, 2 * 0.5 / 0.5]))
    assert above_mean_plus_std(torch.tensor([1.0, 1.1, 0.9, 1.0, 5.0]), 1.5).tolist() == [False] * 4 + [True]


def test_clp_switches_off_a_planted_high_lipschitz_channel_and_uses_no_data_when_fixed(cfg_factory, digits):
    torch.manual_seed(0)
    model = build_model("seed_cnn_bn", 1, digits.image_size, 10)
    fit(model, digits.x_train[:512], digits.y_train[:512], epochs=1, lr=1e-3, batch_size=64, seed=0, device=CPU,
        desc="test")
    with torch.no_grad():
        model[4].weight[7] *= 50  # channel 7 of the second conv: a Lipschitz bound far above its layer's
    cfg = cfg_factory("pruning=clp", "pruning.selection=fixed", "pruning.u=3", "model=seed_cnn_bn")
    ctx = _ctx(cfg, digits)
    ctx.defender = None  # data-free: it must not touch the defender split
    outcome = prune(copy.deepcopy(model), cfg.pruning, ctx)
    pruned = finalize(outcome.model)
    assert outcome.info["pruning/clean_images"] == 0 and not outcome.structured
    assert torch.all(pruned[4].weight[7] == 0) and pruned[5].weight[7] == 0 and pruned[5].bias[7] == 0
    assert outcome.info["pruning/neurons_pruned"] >= 1


def test_clp_compatibility_check_before_compute(cfg_factory):
    # as the reference code: a conv that no BatchNorm follows is not considered; each BatchNorm takes the conv
    # registered last before it
    conv_without_bn = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, 4, 3), nn.Flatten(),
                                    nn.Linear(4, 2))
    assert conv_before_each_batchnorm(conv_without_bn) is None
    bn_first = nn.Sequential(nn.BatchNorm2d(1), nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4))
    assert "0 (no Conv2d registered before it)" in conv_before_each_batchnorm(bn_first)
    assert conv_before_each_batchnorm(build_model("seed_cnn_bn", 1, 16, 10)) is None
    assert conv_before_each_batchnorm(build_model("seed_cnn", 1, 16, 10)) is None  # no BatchNorm at all: fine
    assert conv_before_each_batchnorm(build_model("resnet20", 1, 16, 10)) is None
    assert conv_before_each_batchnorm(build_model("preact_resnet18", 3, 32, 10, width=8)) is None
    validate(cfg_factory("pruning=clp", "model=preact_resnet18"))
    with pytest.raises(ConfigError, match=r"pruning\.method='clp'"):
        validate(cfg_factory("pruning=clp", "model=lenet300"))  # no conv


class _BatchNormAfterTheOtherConv(nn.Module):
    """Runs, but its BatchNorm (8 channels, reading conv_a) is registered after conv_b (4 outputs): the reference
    code pairs it with conv_b and fails on the channel count."""

    def __init__(self, in_channels: int, num_classes: int):
        super().__init__()
        self.conv_a = nn.Conv2d(in_channels, 8, 3, padding=1)
        self.conv_b = nn.Conv2d(in_channels, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.head = nn.Linear(12, num_classes)

    def forward(self, x):
        out = torch.cat([self.bn(self.conv_a(x)), self.conv_b(x)], 1)
        return self.head(out.mean((2, 3)))


def test_clp_rejects_a_batchnorm_whose_channels_differ_from_the_conv_before_it_in_one_line(cfg_factory):
    import models

    models.MODELS.register("bn_after_other_conv")(lambda c, s, n: _BatchNormAfterTheOtherConv(c, n))
    try:
        with pytest.raises(ConfigError) as err:
            validate(cfg_factory("pruning=clp", "model.name=bn_after_other_conv"))
        validate(cfg_factory("pruning=anp", "model.name=bn_after_other_conv"))  # CLP's own premise
    finally:
        models.MODELS.unregister("bn_after_other_conv")
    message = str(err.value)
    assert "\n" not in message and message.startswith("pruning.method='clp' does not fit "
                                                      "model.name='bn_after_other_conv'"), message
    assert "bn (8 channels after conv_b with 4 outputs)" in message, message


def _reference_clp(net, u):
    """CLP as the reference code computes it (rkteddy/channel-Lipschitzness-based-pruning defense.py, the same
    function as BackdoorBench's defense/clp.py CLP_prune), verbatim but for returning the channels it zeroes."""
    params = net.state_dict()
    zeroed = {}
    for name, m in net.named_modules():
        if isinstance(m, nn.BatchNorm2d):
            std = m.running_var.sqrt()
            weight = m.weight
            channel_lips = []
            for idx in range(weight.shape[0]):
                w = conv.weight[idx].reshape(conv.weight.shape[1], -1) * (weight[idx] / std[idx]).abs()
                channel_lips.append(torch.svd(w.cpu())[1].max())
            channel_lips = torch.Tensor(channel_lips)
            index = torch.where(channel_lips > channel_lips.mean() + u * channel_lips.std())[0]
            params[name + ".weight"][index] = 0
            params[name + ".bias"][index] = 0
            zeroed[name] = (channel_lips, channel_lips.mean() + u * channel_lips.std())
        elif isinstance(m, nn.Conv2d):
            conv = m
    net.load_state_dict(params)
    return zeroed


def test_clp_on_preact_resnet18_switches_off_the_channels_the_reference_code_does(tmp_path):
    """Pre-activation: some BatchNorms normalise a residual sum. CLP pairs each with the conv registered last
    before it, as the reference code does, and switching off computes what the reference's zeroing computes."""
    from conftest import compose_cfg

    torch.manual_seed(0)
    model = build_model("preact_resnet18", 3, 32, 10, width=8)
    x = torch.rand(16, 3, 32, 32)
    with torch.no_grad():
        batchnorms = [module for module in model.modules() if isinstance(module, nn.BatchNorm2d)]
        for bn in batchnorms:
            bn.weight.uniform_(0.2, 2.0)
            bn.bias.uniform_(-0.5, 0.5)
        model.get_submodule("layers.1.0.bn1").weight[3] = 50.0  # a residual sum's channel far above its layer's
        model.train()
        for _ in range(3):
            model(x)  # running statistics of its own
    model.eval()
    for bn in batchnorms:
        bn.eps = 0.0  # the reference code leaves eps out: the same bounds on both sides
    cfg = compose_cfg(tmp_path, "pruning=clp", "pruning.selection=fixed", "pruning.u=1").pruning
    ctx = PruneContext(example_inputs=x[:1], calibration=(x, torch.arange(16) % 10), seed=0)
    outcome = prune(copy.deepcopy(model), cfg, ctx)
    pruned = finalize(outcome.model).eval()
    reference = copy.deepcopy(model)
    with torch.no_grad():
        bounds = _reference_clp(reference, 1.0)
    modules = dict(pruned.named_modules())
    ours = {name: modules[name].weight == 0 for name in bounds}
    assert set(bounds) == {name for name, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)}
    layers = neuron_layers(model)
    assert [layer.name for layer in layers] == list(bounds)
    for layer in layers:
        assert torch.allclose(channel_lipschitz(layer), bounds[layer.name][0], rtol=1e-4), layer.name
    for name, (lips, threshold) in bounds.items():
        clear = (lips - threshold).abs() > 1e-4 * threshold  # away from the threshold: float rounding decides no flag
        assert torch.equal(ours[name][clear], (lips > threshold)[clear]), name
        assert torch.all(modules[name].bias[ours[name]] == 0), name
    assert 0 < outcome.info["pruning/neurons_pruned"] == sum(int(flags.sum()) for flags in ours.values())
    assert ours["layers.1.0.bn1"][3]  # the planted channel: its BatchNorm pairs with layers.0.1.conv2
    # the stem conv's output also runs along the first residual path: its filters stay as they were; a block's
    # conv1 feeds its bn2 alone: its filters of the channels switched off are zero too
    assert torch.equal(pruned.conv1.weight, model.conv1.weight)
    for i in range(4):
        block = f"layers.{i}.0"
        assert torch.all(pruned.get_submodule(f"{block}.conv1").weight[ours[f"{block}.bn2"]] == 0), block
    with torch.no_grad():
        for name, flags in ours.items():  # the reference's zeroing at our flags: the same function
            reference_bn = dict(reference.named_modules())[name]
            reference_bn.weight.copy_(model.get_submodule(name).weight * ~flags)
            reference_bn.bias.copy_(model.get_submodule(name).bias * ~flags)
        assert torch.allclose(pruned(x), reference.eval()(x), atol=1e-5)


def test_defences_ignore_sparsity():
    assert PRUNERS["anp"].ignores_sparsity and PRUNERS["clp"].ignores_sparsity


# ---- ANP ------------------------------------------------------------------------------------------------------
def test_anp_is_seeded_and_switches_off_by_threshold(cfg_factory, digits, trained_seed_cnn):
    cfg = cfg_factory("pruning=anp", "pruning.iterations=10", "pruning.selection=threshold",
                      "pruning.threshold=0.99")
    first = prune(copy.deepcopy(trained_seed_cnn), cfg.pruning, _ctx(cfg, digits))
    second = prune(copy.deepcopy(trained_seed_cnn), cfg.pruning, _ctx(cfg, digits))
    a, b = finalize(first.model).state_dict(), finalize(second.model).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert first.info["pruning/clean_images"] == len(digits.y_defender)  # the whole defender split, nothing else
    assert first.info["pruning/neurons_pruned"] >= 1  # after 10 mask steps some mask is below 0.99
    assert all(p.requires_grad for p in trained_seed_cnn.parameters())
    quarter = cfg_factory("pruning=anp", "pruning.iterations=10", "pruning.selection=fraction", "pruning.fraction=0.25")
    outcome = prune(copy.deepcopy(trained_seed_cnn), quarter.pruning, _ctx(quarter, digits))
    assert outcome.info["pruning/neurons_pruned"] == 24  # a quarter of seed_cnn's 32 + 64 conv channels


@pytest.mark.parametrize("noise_steps", [1, 2])
def test_anp_masks_learn_against_the_perturbation_after_its_ascent_steps(digits, noise_steps):
    from benchmark.pruning.methods.anp import learn_masks

    torch.manual_seed(0)
    model = build_model("seed_cnn_bn", 1, digits.image_size, 10)
    head_inputs = []
    model[-1].register_forward_pre_hook(lambda module, inputs: head_inputs.append(inputs[0].detach().clone()))
    x, y = digits.x_train[:64], digits.y_train[:64]
    learn_masks(model, neuron_layers(model), x, y, eps=0.4, alpha=0.2, lr=0.2, iterations=1, noise_steps=noise_steps,
                batch_size=64, seed=0, train_mode=True)
    # one forward per ascent step from the random start, one at the final perturbation (the robust loss), one clean
    assert len(head_inputs) == noise_steps + 2
    noisy = head_inputs[:-1]
    for before, after in zip(noisy, noisy[1:]):  # every ascent step moves each neuron's noise by up to eps
        assert not torch.allclose(before, after), "a perturbation step did not reach the model"


def test_anp_in_batchnorm_train_mode_leaves_the_running_statistics_as_they_were(cfg_factory, digits):
    torch.manual_seed(0)
    model = build_model("seed_cnn_bn", 1, digits.image_size, 10)
    fit(model, digits.x_train[:256], digits.y_train[:256], epochs=1, lr=1e-3, batch_size=64, seed=0, device=CPU,
        desc="test")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = cfg_factory("pruning=anp", "model=seed_cnn_bn", "pruning.iterations=5", "pruning.batchnorm_mode=train",
                      "pruning.selection=threshold", "pruning.threshold=0")
    from benchmark.pruning.methods.anp import learn_masks

    x, y = digits.x_train[:64], digits.y_train[:64]
    learn_masks(model, neuron_layers(model), x, y, eps=0.4, alpha=0.2, lr=0.2, iterations=5, noise_steps=1,
                batch_size=32, seed=0, train_mode=True)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()) and not model.training
    outcome = prune(model, cfg.pruning, _ctx(cfg, digits))  # threshold 0: nothing switched off
    assert outcome.info["pruning/neurons_pruned"] == 0


# ---- known answers: BadNets on a small BatchNorm model (benchmark/tools/defence_known_answers.py) -----------
@pytest.fixture(scope="module")
def backdoored_mnist():
    from benchmark.tools.defence_known_answers import trained_model

    return trained_model("mnist5k", seed=0)


def _claim(defence, backdoored_mnist):
    from benchmark.tools.defence_known_answers import ASR_CUT, MAX_ACC_DROP, defend

    row = defend("mnist5k", 0, *backdoored_mnist, defence)
    assert row["asr_before"] >= 0.8, "the backdoor must take on the dense model"
    assert row["asr_after"] <= ASR_CUT * row["asr_before"] and row["acc_before"] - row["acc_after"] <= MAX_ACC_DROP, row


@pytest.mark.slow
def test_clp_known_answer_on_badnets(backdoored_mnist):
    _claim("clp", backdoored_mnist)


@pytest.mark.slow
@pytest.mark.xfail(raises=AssertionError, strict=False, reason=(
    "on mnist5k, seed_cnn_bn, seed 0, ANP with 300 mask steps on the defender split does not cut the ASR by half "
    "within the accuracy margin (the generated table in docs/defences.md)"))
def test_anp_known_answer_on_badnets(backdoored_mnist):
    _claim("anp", backdoored_mnist)


# ---- the reinit control ---------------------------------------------------------------------------------------
def test_reinit_false_is_the_plain_cell(cfg_factory):
    from benchmark.cell import prepare

    plain = prepare(cfg_factory("pruning=magnitude_global"))
    assert prepare(cfg_factory("pruning=magnitude_global", "+pruning.reinit=false")) == plain
    assert prepare(cfg_factory("pruning=magnitude_global", "+pruning.reinit=true"))[0] != plain[0]


@pytest.mark.parametrize("method, model_name", [("magnitude_global", "seed_cnn"), ("l1_filter", "seed_cnn"),
                                                ("clp", "seed_cnn_bn"), ("hydra", "seed_cnn")])
def test_reinit_keeps_the_mask_and_shapes_and_draws_fresh_weights(cfg_factory, digits, method, model_name):
    from benchmark.cell import run_name
    from benchmark.pruning.common import prunable_layers

    torch.manual_seed(0)
    dense = build_model(model_name, 1, digits.image_size, 10)
    fit(dense, digits.x_train[:512], digits.y_train[:512], epochs=1, lr=1e-3, batch_size=64, seed=0, device=CPU,
        desc="test")
    extra = {"clp": ("pruning.selection=fixed", "pruning.u=1"),
             "hydra": ("pruning.sparsity=0.7", "pruning.score_epochs=1", "pruning.adv_steps=1")}.get(
        method, ("pruning.sparsity=0.7",))
    plain_cfg = cfg_factory(f"pruning={method}", f"model={model_name}", "train.epochs=1", *extra)
    cfg = cfg_factory(f"pruning={method}", f"model={model_name}", "train.epochs=1", "+pruning.reinit=true", *extra)
    assert run_name(cfg).split("|")[1].endswith("+reinit") and "+reinit" not in run_name(plain_cfg)
    ctx = _ctx(cfg, digits)
    trained = []
    ctx.train = lambda model, epochs: trained.append((copy.deepcopy(model), epochs))
    plain = finalize(prune(copy.deepcopy(dense), plain_cfg.pruning, _ctx(plain_cfg, digits)).model)
    outcome = prune(copy.deepcopy(dense), cfg.pruning, ctx)
    (before_training, epochs), = trained  # retrained once, for the dense model's epochs, from the fresh weights
    assert epochs == 1 and outcome.info["pruning/reinit_epochs"] == 1
    fresh = finalize(before_training)
    for (name, p_layer), (_, f_layer) in zip(prunable_layers(plain), prunable_layers(fresh)):
        assert p_layer.weight.shape == f_layer.weight.shape, name  # the pruned architecture
        assert torch.equal(p_layer.weight == 0, f_layer.weight == 0), name  # the same mask
        survivors = p_layer.weight != 0
        assert not torch.allclose(p_layer.weight[survivors], f_layer.weight[survivors]), name  # fresh values
    again = []
    ctx.train = lambda model, epochs: again.append(copy.deepcopy(model))
    prune(copy.deepcopy(dense), cfg.pruning, ctx)
    assert all(torch.equal(a, b) for a, b in zip(finalize(again[0]).state_dict().values(), fresh.state_dict().values()))


def test_known_answers_merge_replaces_only_the_cases_measured_now():
    from benchmark.tools.defence_known_answers import merged

    def entry(model, dataset, seed, value):
        return {"model": model, "dataset": dataset, "seed": seed, "value": value}

    earlier = {"rows": [entry("seed_cnn_bn", "mnist5k", 0, "old"), entry("seed_cnn_bn", "digits", 0, "old"),
                        entry("resnet20", "mnist5k", 0, "old")],
               "anp_premise": [{"dataset": "mnist5k", "seed": 0, "value": "old"},  # before premises named a model
                               entry("seed_cnn_bn", "digits", 0, "old")]}
    rows, premises = merged(earlier, [entry("resnet20", "mnist5k", 0, "new"), entry("seed_cnn_bn", "mnist5k", 1, "new"),
                                      entry("seed_cnn_bn", "digits", 0, "new")],
                            [entry("seed_cnn_bn", "digits", 0, "new")])  # mnist5k seed 0's premise not measured now
    assert [(r["model"], r["dataset"], r["seed"], r["value"]) for r in rows] == [
        ("seed_cnn_bn", "mnist5k", 0, "old"), ("seed_cnn_bn", "mnist5k", 1, "new"), ("seed_cnn_bn", "digits", 0, "new"),
        ("resnet20", "mnist5k", 0, "new")]
    assert premises == [{"dataset": "mnist5k", "seed": 0, "value": "old", "model": "seed_cnn_bn"},
                        entry("seed_cnn_bn", "digits", 0, "new")]
