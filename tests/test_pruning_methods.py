"""Known-answer tests of the pruning methods, schedules and cost measurements."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn

from benchmark import hashing, measure, stages
from benchmark.pruning import PRUNERS, prune
from benchmark.pruning.common import achieved_sparsity, finalize, layer_weight_counts, load_state_into, prunable_layers
from benchmark.pruning.dormant import last_conv, last_conv_activations
from benchmark.pruning.rewind import rewind, rewind_point
from benchmark.pruning.loops import bn_l1_penalty, pgd_perturbation
from benchmark.training import fit
from benchmark.validate import ConfigError, validate
from models import build_model

CPU = torch.device("cpu")
UNSTRUCTURED = ["magnitude_global", "magnitude_layerwise", "random", "snip", "taylor", "lottery_ticket", "hydra"]
STRUCTURED = ["l1_filter", "l2_filter", "taylor_filter", "lamp", "random_filter", "fine_pruning"]
HYDRA_FAST = ("pruning.score_epochs=1", "pruning.adv_steps=1")  # one epoch of scores on PGD-1 examples


def _cfg(cfg_factory, method, sparsity, *extra):
    # train.epochs=1: methods that train inside (snip at init, lottery rounds) stay fast on digits; hydra: HYDRA_FAST
    fast = HYDRA_FAST if method == "hydra" else ()
    return cfg_factory(f"pruning={method}", f"pruning.sparsity={sparsity}", "train.epochs=1", *fast, *extra)


def _ctx(cfg, digits):
    return stages.prune_context(cfg, stages.TrainingSets.clean(digits), CPU)


def _prune(model, cfg, digits):
    return prune(copy.deepcopy(model), cfg.pruning, _ctx(cfg, digits))


def _sparsity(dense, model):
    return achieved_sparsity(layer_weight_counts(dense, True), model, True)[0]


def _dense(name, digits, epochs=1, n=None):
    torch.manual_seed(0)
    model = build_model(name, digits.in_channels, digits.image_size, digits.num_classes)
    x, y = (digits.x_train, digits.y_train) if n is None else (digits.x_train[:n], digits.y_train[:n])
    fit(model, x, y, epochs=epochs, lr=1e-3, batch_size=64, seed=0, device=CPU, desc="test dense")
    return model


@pytest.mark.parametrize("method", UNSTRUCTURED + STRUCTURED)
@pytest.mark.parametrize("target", [0.5, 0.7, 0.9])
def test_method_reaches_target_sparsity_on_seed_cnn(trained_seed_cnn, cfg_factory, digits, method, target):
    outcome = _prune(trained_seed_cnn, _cfg(cfg_factory, method, target), digits)
    model = finalize(outcome.model)
    achieved = _sparsity(trained_seed_cnn, model)
    # unstructured: exact to 1%; structured: whole channels, the closest achievable value is within 2% here
    assert abs(achieved - target) <= (0.02 if outcome.structured else 0.01), achieved
    assert outcome.structured == (method in STRUCTURED) == PRUNERS[method].structured
    assert model(torch.zeros(2, 1, 16, 16)).shape == (2, 10)


def test_unstructured_layerwise_methods_prune_every_layer_equally(trained_seed_cnn, cfg_factory, digits):
    for method in ("magnitude_layerwise", "random"):
        outcome = _prune(trained_seed_cnn, _cfg(cfg_factory, method, 0.7), digits)
        model = finalize(outcome.model)
        for name, layer in prunable_layers(model):
            zeros = (layer.weight == 0).float().mean().item()
            assert abs(zeros - 0.7) < 0.01, (method, name, zeros)


def test_threshold_applies_the_seed_rule_and_reports_its_real_sparsity(trained_seed_cnn, cfg_factory, digits):
    outcome = _prune(trained_seed_cnn, _cfg(cfg_factory, "threshold", 0.5), digits)
    model = finalize(outcome.model)
    for (_, dense_layer), (_, layer) in zip(prunable_layers(trained_seed_cnn), prunable_layers(model)):
        w = dense_layer.weight.detach()
        keep = w.abs() > 0.5 * w.abs().max()
        assert torch.equal(layer.weight != 0, keep)
    achieved = _sparsity(trained_seed_cnn, model)
    assert outcome.info["pruning/threshold_rate"] == 0.5
    assert 0.5 < achieved < 1.0 and abs(achieved - 0.5) > 0.05  # the rate is not the sparsity


def test_structured_pruning_shrinks_tensors_and_macs_but_keeps_output_shape(trained_seed_cnn, cfg_factory, digits):
    outcome = _prune(trained_seed_cnn, _cfg(cfg_factory, "l1_filter", 0.7), digits)
    model = outcome.model
    x = digits.x_test[:5]
    assert model(x).shape == trained_seed_cnn(x).shape == (5, 10)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert convs[0].out_channels < 32 and convs[1].out_channels < 64
    macs, params = measure.macs_and_params(model, x[:1])
    macs_dense, params_dense = measure.macs_and_params(trained_seed_cnn, x[:1])
    assert macs < 0.5 * macs_dense and params < 0.5 * params_dense
    model(x).sum().backward()  # still trainable


def test_structured_model_survives_the_safetensors_cache_round_trip(trained_seed_cnn, cfg_factory, digits):
    outcome = _prune(trained_seed_cnn, _cfg(cfg_factory, "l1_filter", 0.7), digits)
    restored = load_state_into(build_model("seed_cnn", 1, 16, 10), outcome.model.state_dict())
    x = digits.x_test[:20]
    assert torch.equal(restored(x), outcome.model(x))


@pytest.mark.parametrize("scope", ["global", "layerwise"])
def test_iterative_schedule_reaches_target_and_fine_tunes_between_steps(trained_seed_cnn, cfg_factory, digits, scope):
    method = "magnitude_global" if scope == "global" else "magnitude_layerwise"
    cfg = _cfg(cfg_factory, method, 0.8, "pruning.schedule=iterative", "pruning.steps=3")
    ctx = _ctx(cfg, digits)
    calls, finetune = [], ctx.finetune
    ctx.finetune = lambda model, epochs=None: calls.append(1) or finetune(model, epochs)
    outcome = prune(copy.deepcopy(trained_seed_cnn), cfg.pruning, ctx)
    model = finalize(outcome.model)
    assert len(calls) == 2 and outcome.info["pruning/steps"] == 3  # the 3rd fine-tune is the cell's own
    assert abs(_sparsity(trained_seed_cnn, model) - 0.8) < 0.01
    if scope == "layerwise":
        for name, layer in prunable_layers(model):
            assert abs((layer.weight == 0).float().mean().item() - 0.8) < 0.01, name
    # weights that survived the first step were fine-tuned: they are not the dense values any more
    dense_w, w = trained_seed_cnn[3].weight, model[3].weight
    assert not torch.equal(dense_w[w != 0], w[w != 0])


def test_layerwise_last_first_prunes_one_layer_per_step_from_the_head(trained_seed_cnn, cfg_factory, digits):
    cfg = _cfg(cfg_factory, "magnitude_layerwise", 0.6, "pruning.schedule=iterative", "pruning.order=last_first")
    ctx = _ctx(cfg, digits)
    seen = []  # zeros per layer at each fine-tune: the head is pruned first, the first conv last
    finetune = ctx.finetune
    ctx.finetune = lambda model, epochs=None: seen.append(
        [round((m.weight == 0).float().mean().item(), 2) for _, m in prunable_layers(model)]) or finetune(model, epochs)
    model = finalize(prune(copy.deepcopy(trained_seed_cnn), cfg.pruning, ctx).model)
    assert seen == [[0.0, 0.0, 0.6], [0.0, 0.6, 0.6]]
    assert [round((m.weight == 0).float().mean().item(), 2) for _, m in prunable_layers(model)] == [0.6, 0.6, 0.6]


@pytest.mark.parametrize("method", ["magnitude_global", "threshold", "snip", "taylor", "lottery_ticket"])
def test_pruned_weights_stay_zero_through_finetuning(trained_seed_cnn, cfg_factory, digits, method):
    cfg = _cfg(cfg_factory, method, 0.8)
    ctx = _ctx(cfg, digits)
    outcome = prune(copy.deepcopy(trained_seed_cnn), cfg.pruning, ctx)
    zero_before = {n: (m.weight == 0).clone() for n, m in prunable_layers(outcome.model)}
    before = {n: m.weight.detach().clone() for n, m in prunable_layers(outcome.model)}
    ctx.finetune(outcome.model, 1)
    model = finalize(outcome.model)
    for name, layer in prunable_layers(model):
        assert torch.all(layer.weight[zero_before[name]] == 0), name
        assert not torch.equal(layer.weight, before[name]), f"{name}: surviving weights were not fine-tuned"


# Every schedule x scope x order the pruning YAMLs allow beyond the defaults (threshold takes a rate, not a sparsity).
COMBINATIONS = [  # each method's defaults: test_method_reaches_target_sparsity_on_seed_cnn
    ("snip", ("pruning.at_init=false",)), ("snip", ("pruning.scope=layerwise",)),
    ("lottery_ticket", ("pruning.scope=layerwise",)), ("lottery_ticket", ("pruning.rewind_epoch=1", "train.epochs=2")),
    *[(m, ("pruning.schedule=iterative",)) for m in ("magnitude_global", "magnitude_layerwise", "taylor")],
    *[(m, ("pruning.schedule=iterative", "pruning.order=last_first"))
      for m in ("magnitude_layerwise",)],
    *[("taylor", (f"pruning.scope={scope}", f"pruning.schedule={schedule}", f"pruning.order={order}"))
      for scope in ("global", "layerwise") for schedule in ("oneshot", "iterative")
      for order in ("together", "last_first")],
]


@pytest.mark.parametrize("method,extra", COMBINATIONS, ids=lambda v: v if isinstance(v, str) else ",".join(v) or "-")
def test_every_configurable_combination_reaches_its_target(trained_seed_cnn, cfg_factory, digits, method, extra):
    cfg = _cfg(cfg_factory, method, 0.7, *extra)
    outcome = _prune(trained_seed_cnn, cfg, digits)
    achieved = _sparsity(trained_seed_cnn, finalize(outcome.model))
    assert abs(achieved - 0.7) <= (0.02 if outcome.structured else 0.01), achieved


def test_iterative_scores_use_the_weights_after_the_last_optimizer_step(trained_seed_cnn, cfg_factory, digits):
    """Between steps the optimizer updates `weight_orig`; `weight` is only refreshed by the next forward pass.
    Magnitude scores must rank the current weights: here the fine-tune negates and rescales one layer's kept
    weights without a forward pass, so scores of the stale tensor would rank them differently."""
    from benchmark.pruning.scored import scores_for

    model = copy.deepcopy(trained_seed_cnn)
    layer = model[3]
    torch.nn.utils.prune.l1_unstructured(layer, "weight", amount=0.5)
    with torch.no_grad():  # what an optimizer step does: update the leaf, not the derived `weight`
        layer.weight_orig.mul_(torch.linspace(0.1, 3.0, layer.weight_orig.numel()).reshape(layer.weight_orig.shape))
    (score,) = scores_for("magnitude", model, [layer], _ctx(_cfg(cfg_factory, "magnitude_global", 0.5), digits))
    assert torch.equal(score, (layer.weight_orig * layer.weight_mask).detach().abs())


def test_taylor_scores_are_weight_times_gradient(trained_seed_cnn, cfg_factory, digits):
    """Known answer: the kept weights are exactly the top |w * dL/dw| over all layers (global scope)."""
    cfg = _cfg(cfg_factory, "taylor", 0.7)
    ctx = _ctx(cfg, digits)
    dense = copy.deepcopy(trained_seed_cnn).eval()
    x, y = ctx.calibration
    torch.nn.functional.cross_entropy(dense(x), y).backward()
    scores = torch.cat([(m.weight * m.weight.grad).abs().flatten() for _, m in prunable_layers(dense)])
    keep = scores >= scores.kthvalue(int(0.7 * len(scores)) + 1).values
    model = finalize(prune(copy.deepcopy(trained_seed_cnn), cfg.pruning, ctx).model)
    kept = torch.cat([(m.weight != 0).flatten() for _, m in prunable_layers(model)])
    assert (kept == keep).float().mean() > 0.999  # ties at the threshold aside


def test_snip_scores_the_init_and_trains_from_it(trained_seed_cnn, cfg_factory, digits):
    cfg = _cfg(cfg_factory, "snip", 0.9)
    ctx = _ctx(cfg, digits)
    trained = []
    ctx.train = lambda model, epochs: trained.append(epochs)  # record instead of training
    model = prune(copy.deepcopy(trained_seed_cnn), cfg.pruning, ctx).model
    assert trained == [1]
    init_w = ctx.initial_state["0.weight"]
    w = model[0].weight.detach()
    assert torch.equal(w[w != 0], init_w[w != 0])  # surviving weights are the init's, not the trained ones


@pytest.mark.parametrize("method", ["l2_filter", "taylor_filter", "lamp", "random_filter", "fine_pruning", "slimming"])
def test_structured_methods_on_resnet20_keep_output_shape_and_train(cfg_factory, digits, method):
    """Residual couplings are torch-pruning's dependency graph's job: the pruned ResNet-20 still adds its blocks."""
    dense = _dense("resnet20", digits, epochs=1, n=256)  # trained a little: fresh BN scales are all 1 (ties)
    cfg = _cfg(cfg_factory, method, 0.5, "model=resnet20")
    outcome = _prune(dense, cfg, digits)
    x = digits.x_test[:4]
    out = outcome.model(x)
    assert out.shape == (4, 10)
    out.sum().backward()
    achieved = _sparsity(dense, outcome.model)
    limit = 0.55 if method == "fine_pruning" else 0.52  # fine_pruning: only the last conv's group, capped at 0.68
    assert 0.45 <= achieved <= limit, achieved
    convs = [m for m in outcome.model.modules() if isinstance(m, nn.Conv2d)]
    assert sum(c.weight.numel() for c in convs) < sum(c.weight.numel() for c in dense.modules() if isinstance(c, nn.Conv2d))


@pytest.mark.parametrize("method", ["l2_filter", "lamp"])
def test_structured_methods_on_lenet300(cfg_factory, digits, method):
    dense = _dense("lenet300", digits, epochs=0)
    outcome = _prune(dense, _cfg(cfg_factory, method, 0.9, "model=lenet300"), digits)
    assert abs(_sparsity(dense, outcome.model) - 0.9) < 0.02
    out = outcome.model(digits.x_test[:3])
    assert out.shape == (3, 10)
    out.sum().backward()


def test_slimming_l1_drives_bn_scales_down_and_slimming_prunes_vgg(cfg_factory, digits):
    def train(penalty):  # 16 Adam steps from the same init on the same batches: only the L1 term differs
        torch.manual_seed(0)
        model = build_model("vgg11_bn", digits.in_channels, digits.image_size, digits.num_classes)
        fit(model, digits.x_train[:256], digits.y_train[:256], epochs=1, lr=1e-2, batch_size=16, seed=0, device=CPU,
            desc="slim", extra_loss=bn_l1_penalty(penalty))
        return model, torch.cat([m.weight.detach().abs() for m in model.modules() if isinstance(m, nn.BatchNorm2d)])

    (_, plain), (slim, slimmed) = train(0.0), train(1e-2)
    assert slimmed.mean() < plain.mean() - 0.05  # the L1 term shrinks the BatchNorm scales, by a margin
    # the penalty is part of the dense training config, hence of the dense cache key
    assert hashing.dense_key(cfg_factory("train.slimming_l1=1e-4"), None) != hashing.dense_key(cfg_factory(), None)
    cfg = _cfg(cfg_factory, "slimming", 0.5, "model=vgg11_bn")
    outcome = _prune(slim, cfg, digits)
    assert abs(_sparsity(slim, outcome.model) - 0.5) < 0.02
    assert outcome.model(digits.x_test[:2]).shape == (2, 10)


def test_lottery_rewind_restores_surviving_weights_exactly(trained_seed_cnn, cfg_factory, digits):
    cfg = _cfg(cfg_factory, "lottery_ticket", 0.8)
    ctx = _ctx(cfg, digits)
    model = prune(copy.deepcopy(trained_seed_cnn), cfg_factory("pruning=magnitude_global", "pruning.sparsity=0.8").pruning,
                  ctx).model
    rewind(model, ctx.initial_state)
    for name, layer in prunable_layers(model):
        w, init = layer.weight.detach(), ctx.initial_state[f"{name}.weight"]  # `weight` as the forward pass sees it
        mask = getattr(layer, "weight_mask")
        assert torch.equal(w[mask.bool()], init[mask.bool()]), name  # bit-exact
        assert torch.all(w[~mask.bool()] == 0)
        assert torch.equal(layer.bias, ctx.initial_state[f"{name}.bias"])
    # rewinding to epoch k replays the dense run's first k epochs exactly (same seed, same batches)
    early = rewind_point(copy.deepcopy(trained_seed_cnn), ctx, 1)
    replay = stages.fresh_model(cfg, digits)
    fit(replay, digits.x_train, digits.y_train, epochs=1, lr=cfg.train.lr, batch_size=cfg.train.batch_size, seed=cfg.seed,
        device=CPU, desc="replay")
    assert all(torch.equal(early[k], v) for k, v in replay.state_dict().items())


@pytest.mark.parametrize("method", ["snip", "lottery_ticket", "random_filter", "fine_pruning", "taylor_filter", "hydra"])
def test_same_seed_same_pruned_model(trained_seed_cnn, cfg_factory, digits, method):
    cfg = _cfg(cfg_factory, method, 0.7)
    first = finalize(_prune(trained_seed_cnn, cfg, digits).model).state_dict()
    second = finalize(_prune(trained_seed_cnn, cfg, digits).model).state_dict()
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def test_fine_pruning_removes_the_least_active_channels(trained_seed_cnn, cfg_factory, digits):
    cfg = _cfg(cfg_factory, "fine_pruning", 0.5, "pruning.channel_fraction=0.25")
    ctx = _ctx(cfg, digits)
    activations = last_conv_activations(trained_seed_cnn, ctx.defender[0])  # the defender split only
    outcome = prune(copy.deepcopy(trained_seed_cnn), cfg.pruning, ctx)
    kept = torch.sort(activations, stable=True).indices[16:].sort().values  # 25% of 64 channels removed
    assert last_conv(outcome.model).out_channels == 48 and outcome.info["pruning/channels_removed"] == 16
    assert torch.equal(last_conv(outcome.model).weight, last_conv(trained_seed_cnn).weight[kept])
    assert outcome.info["pruning/removed_mean_activation"] < outcome.info["pruning/kept_mean_activation"]
    # the next layer (the head) lost exactly the inputs fed by the removed channels
    assert outcome.model[-1].in_features == 48 * 4


def test_pgd_perturbation_stays_in_the_ball_and_raises_the_loss(trained_seed_cnn, digits):
    x, y = digits.x_test[:64], digits.y_test[:64]
    torch.manual_seed(0)
    grads = [None if p.grad is None else p.grad.clone() for p in trained_seed_cnn.parameters()]
    x_adv = pgd_perturbation(0.1, 5)(trained_seed_cnn, x, y)
    assert (x_adv - x).abs().max() <= 0.1 + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    loss = torch.nn.functional.cross_entropy
    with torch.no_grad():
        assert loss(trained_seed_cnn(x_adv), y) > loss(trained_seed_cnn(x), y) + 0.5
    for grad, p in zip(grads, trained_seed_cnn.parameters()):  # parameter gradients untouched (autograd.grad)
        assert (grad is None and p.grad is None) or torch.equal(grad, p.grad)


def test_cost_metrics_show_real_speedup_only_for_structured(trained_seed_cnn, cfg_factory, digits):
    latency = cfg_factory().eval.latency
    structured = _prune(trained_seed_cnn, _cfg(cfg_factory, "l2_filter", 0.9), digits).model
    masked = finalize(_prune(trained_seed_cnn, _cfg(cfg_factory, "magnitude_global", 0.9), digits).model)
    fast = measure.cost_metrics(trained_seed_cnn, structured, digits.x_test, latency)
    same = measure.cost_metrics(trained_seed_cnn, masked, digits.x_test, latency)
    assert fast["cost/speedup"] > 1.5 and fast["cost/latency_ms"] < fast["cost/latency_ms_dense"]
    assert 0.6 < same["cost/speedup"] < 1.6  # zeros are still multiplied by dense kernels
    # compressed size: zeros compress, removed channels are gone; both far below the dense model
    assert fast["cost/size_kb"] < 0.3 * fast["cost/size_kb_dense"] and same["cost/size_kb"] < 0.5 * same["cost/size_kb_dense"]


@pytest.mark.parametrize("overrides, key", [
    (("pruning=taylor", "pruning.scope=per_layer"), "pruning.scope"),
    (("pruning=magnitude_global", "pruning.schedule=gradual"), "pruning.schedule"),
    (("pruning=lottery_ticket", "pruning.rounds=0"), "pruning.rounds"),
    (("pruning=magnitude_layerwise", "pruning.order=first_last"), "pruning.order"),
    (("train.slimming_l1=-1",), "train.slimming_l1"),
    (("finetune.adversarial=true", "finetune.adv_eps=2"), "finetune.adv_eps"),
    (("pruning=hydra", "pruning.adv_eps=2"), "pruning.adv_eps"),
    (("pruning=hydra", "pruning.score_epochs=-1"), "pruning.score_epochs"),
    (("pruning=hydra", "pruning.scope=per_layer"), "pruning.scope"),
    (("pruning=hydra", "pruning.loss=kl"), "pruning.loss"),
    # the defences' selection rules use clean data only, never the test set's ASR
    (("pruning=clp", "pruning.selection=best_asr"), "pruning.selection"),
    (("pruning=clp", "pruning.u_grid=[]"), "pruning.u_grid"),
    (("pruning=anp", "pruning.val_fraction=1"), "pruning.val_fraction"),
    (("pruning=anp", "pruning.eps=2"), "pruning.eps"),
    (("pruning=anp", "pruning.selection=test_asr"), "pruning.selection"),
])
def test_bad_pruning_configs_fail_before_compute(cfg_factory, overrides, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        validate(cfg_factory(*overrides))


# ---- HYDRA: scores learned under the adversarial loss with the weights frozen -------------------------------------
def test_hydra_without_score_epochs_is_magnitude_per_layer(trained_seed_cnn, cfg_factory, digits):
    """The scaled initialisation ranks each layer's weights by |w|: with no score epochs, HYDRA's mask is
    magnitude_layerwise's (the paper's LWM baseline), exactly."""
    hydra = finalize(_prune(trained_seed_cnn, _cfg(cfg_factory, "hydra", 0.8, "pruning.score_epochs=0"), digits).model)
    magnitude = finalize(_prune(trained_seed_cnn, _cfg(cfg_factory, "magnitude_layerwise", 0.8), digits).model)
    assert all(torch.equal(a, b) for a, b in zip(hydra.state_dict().values(), magnitude.state_dict().values()))


def test_hydra_forward_uses_the_top_scores_and_trains_only_them(trained_seed_cnn):
    """While the scores learn, the model computes with w * (top-k mask of |s|) per layer, the gradient reaches the
    scores (straight through the mask) and nothing else; afterwards the model is the plain dense one again."""
    from benchmark.pruning.methods.hydra import learn_scores, scaled_scores

    model = copy.deepcopy(trained_seed_cnn)
    layers = [m for _, m in prunable_layers(model)]
    dense_state = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.rand(8, 1, 16, 16)
    seen = {}

    def train(subnet_model):
        out = subnet_model(x)
        reference = copy.deepcopy(trained_seed_cnn)
        for _, layer in prunable_layers(reference):
            s = scaled_scores(layer.weight).abs()
            keep = s > s.flatten().kthvalue(int(round(0.75 * s.numel()))).values
            layer.weight.data *= keep
        seen["max_diff"] = (out - reference(x)).abs().max().item()
        out.sum().backward()
        seen["trainable"] = [n for n, p in subnet_model.named_parameters() if p.requires_grad]
        seen["score_grads"] = [float(layer.parametrizations.weight[0].scores.grad.abs().sum()) for layer in layers]

    scores = learn_scores(model, layers, 0.75, "layerwise", train)
    assert seen["max_diff"] < 1e-5
    assert seen["trainable"] and all(n.endswith(".scores") for n in seen["trainable"])
    assert all(g > 0 for g in seen["score_grads"])
    assert [s.shape for s in scores] == [layer.weight.shape for layer in layers]
    assert model.state_dict().keys() == dense_state.keys()
    assert all(torch.equal(model.state_dict()[k], v) for k, v in dense_state.items())
    assert all(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("scope", ["layerwise", "global"])
def test_hydra_learns_a_new_mask_on_frozen_weights(trained_seed_cnn, cfg_factory, digits, scope):
    cfg = _cfg(cfg_factory, "hydra", 0.8, f"pruning.scope={scope}")
    outcome = _prune(trained_seed_cnn, cfg, digits)
    model = finalize(outcome.model)
    assert outcome.info["pruning/mask_swapped"] > 0.01  # the scores moved away from the magnitude ranking
    for (name, dense), (_, layer) in zip(prunable_layers(trained_seed_cnn), prunable_layers(model)):
        kept = layer.weight != 0
        assert torch.equal(layer.weight[kept], dense.weight[kept]), name  # weights frozen: survivors unchanged
        if scope == "layerwise":
            assert abs((~kept).float().mean().item() - 0.8) < 0.01, name


def test_hydra_learns_its_scores_on_the_pruning_stage_training_set(trained_seed_cnn, cfg_factory, digits):
    import dataclasses

    other = dataclasses.replace(digits, x_train=digits.x_train[:100], y_train=digits.y_train[:100])
    sets = stages.TrainingSets(dense=digits, calibration=digits, pruning_finetune=other, finetune=digits,
                               defender=digits.defender())
    cfg = _cfg(cfg_factory, "hydra", 0.5)
    ctx = stages.prune_context(cfg, sets, CPU)
    assert ctx.pruning_train[0] is other.x_train and ctx.pruning_train[1] is other.y_train
    masks = []
    for data in (other, digits):  # only the pruning stage's set changes: so does the learned mask
        ctx.pruning_train = (data.x_train, data.y_train)
        model = prune(copy.deepcopy(trained_seed_cnn), cfg.pruning, ctx).model
        masks.append(torch.cat([m.weight_mask.flatten() for _, m in prunable_layers(model)]))
    assert not torch.equal(*masks)


def test_hydra_loss_trades_scores_under_the_trades_objective(trained_seed_cnn, cfg_factory, digits, monkeypatch):
    """`pruning.loss=trades` optimises the scores under the suite's TRADES loss (the dense `train.adversarial=trades`
    objective) at the reference code's settings (beta 6, step 2.5 eps / steps), on every mini-batch; `ce` never
    builds it. The loss is part of the pruned model's key and of the run name."""
    from benchmark.cell import run_name
    from benchmark.pruning import loops

    built, scored = [], []
    real = loops.trades_loss

    def recording(eps, steps, step, beta):
        built.append((eps, steps, step, beta))
        loss = real(eps, steps, step, beta)
        return lambda model, x, y: scored.append(len(y)) or loss(model, x, y)

    monkeypatch.setattr(loops, "trades_loss", recording)
    trades = _cfg(cfg_factory, "hydra", 0.5, "pruning.loss=trades")
    _prune(trained_seed_cnn, trades, digits)
    assert built == [pytest.approx((0.1, 1, 0.25, 6.0))]
    assert sum(scored) == len(digits.y_train)  # one epoch: every training image, through the TRADES loss
    built.clear()
    ce = _cfg(cfg_factory, "hydra", 0.5)
    _prune(trained_seed_cnn, ce, digits)
    assert built == []
    assert hashing.pruned_key("dense", ce) != hashing.pruned_key("dense", trades)
    assert "|hydra+trades|" in run_name(trades) and "|hydra|" in run_name(ce)


def test_hydra_is_at_least_as_robust_as_magnitude_with_adversarial_finetuning(trained_seed_cnn, cfg_factory, digits,
                                                                               tmp_path):
    """Known answer (Sehwag et al. 2020): at sparsity 0.9, HYDRA's mask + adversarial fine-tuning reaches at least
    the PGD robust accuracy of global magnitude pruning + the same adversarial fine-tuning. Equal budgets: both get
    the cell's fine-tune (1 epoch on PGD-5 examples at eps 0.1) through stages.pruned_model; HYDRA's score epochs
    (3, PGD-5) are extra. Evaluated with ART's PGD-10 on the whole digits test split."""
    from attacks import build_threat
    from benchmark.cache import ModelCache

    robust = {}
    for method in ("magnitude_global", "hydra"):
        cfg = cfg_factory(f"pruning={method}", "pruning.sparsity=0.9", "finetune.adversarial=true", "threat=pgd",
                          f"threat.subset={len(digits.y_test)}")
        model, _ = stages.pruned_model(cfg, copy.deepcopy(trained_seed_cnn), stages.TrainingSets.clean(digits),
                                       method, ModelCache(tmp_path / "cache"), CPU, use_cache=False)
        metrics = build_threat(cfg.threat).evaluate(model, digits, CPU, seed=0).metrics
        robust[method] = {"clean": metrics["robust/subset_clean_acc"],
                          **{e: metrics[f"robust/pgd_linf/eps_{e}"] for e in ("0.1", "0.2")}}
    assert robust["hydra"]["0.1"] >= robust["magnitude_global"]["0.1"], robust
