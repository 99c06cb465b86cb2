"""Training recipes (`train.*`, `finetune.*`: optimiser, schedule, augmentation) and adversarially trained dense
models (`train.adversarial`): each option changes training as it claims, is validated, and enters the keys."""
from __future__ import annotations

import math
import time

import pytest
import torch
import torch.nn as nn
from statsmodels.stats.proportion import proportion_confint

from benchmark import hashing, stages
from benchmark.recipes import CROP_PADDING, Recipe
from benchmark.training import fit
from benchmark.validate import ConfigError, check_config
from models import build_model

CPU = torch.device("cpu")


def _seed_cnn(data, seed=0):
    torch.manual_seed(seed)
    return build_model("seed_cnn", data.in_channels, data.image_size, data.num_classes)


def _weights(model) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


# ---- validation --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("overrides, message", [
    (["train.optimizer=rmsprop"], "train.optimizer='rmsprop' is unknown; allowed: 'adam' or 'sgd'"),
    (["finetune.optimizer=lbfgs"], "finetune.optimizer='lbfgs' is unknown"),
    (["train.momentum=1"], "train.momentum=1 is out of range; allowed: 0.0 <= momentum < 1.0"),
    (["train.weight_decay=-0.1"], "train.weight_decay=-0.1 is out of range"),
    (["train.optimizer=sgd", "train.nesterov=true"], "train.nesterov=True needs momentum > 0"),
    (["train.schedule=linear"], "train.schedule='linear' is unknown; allowed: 'none', 'cosine', 'step' or 'onecycle'"),
    (["train.schedule=step"], "train.schedule='step' needs milestones"),
    (["train.schedule=step", "train.milestones=[3,2]"], "train.milestones=[3, 2] needs increasing epochs"),
    (["train.schedule=step", "train.milestones=[9]"], "within 1..epochs (8)"),
    (["finetune.schedule=step", "finetune.milestones=[0]"], "finetune.milestones[0]=0 is out of range"),
    (["train.gamma=0"], "train.gamma=0 is out of range; allowed: 0.0 < gamma <= 1.0"),
    (["finetune.augment=mixup"], "finetune.augment='mixup' is unknown; allowed: 'none' or 'crop_flip'"),
    (["train.adversarial=fgsm"], "train.adversarial='fgsm' is unknown; allowed: 'none', 'pgd' or 'trades'"),
    (["train.adversarial=true"], "train.adversarial=True is unknown"),
    (["train.adv_eps=0"], "train.adv_eps=0 is out of range; allowed: 0.0 < adv_eps <= 1.0"),
    (["train.adv_steps=0"], "train.adv_steps=0 is out of range"),
    (["train.adv_step_size=2"], "train.adv_step_size=2 is out of range"),
    (["train.trades_beta=-1"], "train.trades_beta=-1 is out of range"),
    (["~train.optimizer"], "train.optimizer is missing"),
    (["+train.lr_schedule=cosine"], "train.lr_schedule='cosine' is not a key of train"),
])
def test_bad_recipes_fail_with_one_line_naming_the_key(cfg_factory, overrides, message):
    with pytest.raises(ConfigError) as err:
        check_config(cfg_factory(*overrides))
    assert message in str(err.value) and "\n" not in str(err.value), str(err.value)


def test_the_cifar_recipes_validate(cfg_factory):
    check_config(cfg_factory("train.optimizer=sgd", "train.momentum=0.9", "train.nesterov=true",
                             "train.weight_decay=5e-4", "train.schedule=step", "train.milestones=[4,6]",
                             "train.augment=crop_flip", "train.adversarial=trades", "finetune.optimizer=sgd",
                             "finetune.momentum=0.9", "finetune.schedule=onecycle", "finetune.augment=crop_flip"))


# ---- keys ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("override", ["train.optimizer=sgd", "train.weight_decay=1e-4", "train.schedule=cosine",
                                      "train.augment=crop_flip", "train.adversarial=pgd", "train.adversarial=trades",
                                      "train.adv_eps=0.2"])
def test_every_training_key_enters_the_dense_key_and_the_cell_hash(cfg_factory, override):
    base, changed = cfg_factory(), cfg_factory(override)
    assert hashing.dense_key(changed, None) != hashing.dense_key(base, None)
    assert hashing.cell_hash(changed) != hashing.cell_hash(base)


@pytest.mark.parametrize("override", ["finetune.optimizer=sgd", "finetune.schedule=cosine",
                                      "finetune.augment=crop_flip"])
def test_fine_tune_recipe_keys_enter_the_pruned_key_only(cfg_factory, override):
    base, changed = cfg_factory(), cfg_factory(override)
    assert hashing.dense_key(changed, None) == hashing.dense_key(base, None)
    assert hashing.pruned_key("dense", changed) != hashing.pruned_key("dense", base)


# ---- optimiser -----------------------------------------------------------------------------------------------------
def test_the_default_recipe_is_plain_adam(digits):
    """The default recipe trains exactly as torch.optim.Adam at `lr` with no schedule and no augmentation."""
    x, y = digits.x_train[:256], digits.y_train[:256]
    runs = []
    for kwargs in ({}, {"make_optimizer": lambda params: torch.optim.Adam(params, lr=1e-3)}):
        model = _seed_cnn(digits)
        fit(model, x, y, epochs=2, lr=1e-3, batch_size=64, seed=0, device=CPU, desc="t", **kwargs)
        runs.append(_weights(model))
    assert torch.equal(*runs)


def test_sgd_gets_its_momentum_nesterov_and_weight_decay():
    params = [nn.Parameter(torch.zeros(3))]
    sgd = Recipe(optimizer="sgd", momentum=0.9, nesterov=True, weight_decay=5e-4).make_optimizer(params, 0.1)
    assert isinstance(sgd, torch.optim.SGD)
    assert {k: sgd.defaults[k] for k in ("lr", "momentum", "nesterov", "weight_decay")} == {
        "lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4}
    assert isinstance(Recipe(weight_decay=1e-4).make_optimizer(params, 0.1), torch.optim.Adam)


def test_sgd_weight_decay_shrinks_the_weights(digits):
    """With the data's gradient the same, SGD's weight decay (1.0 at lr 0.1, 24 steps) shrinks the weights."""
    x, y = digits.x_train[:384], digits.y_train[:384]
    norms = {}
    for decay in (0.0, 1.0):
        model = _seed_cnn(digits)
        fit(model, x, y, epochs=4, lr=0.1, batch_size=64, seed=0, device=CPU, desc="t",
            recipe=Recipe(optimizer="sgd", weight_decay=decay))
        norms[decay] = _weights(model).norm().item()
    assert norms[1.0] < 0.5 * norms[0.0], norms


# ---- schedules -----------------------------------------------------------------------------------------------------
def _lrs(recipe: Recipe, lr: float, epochs: int, batches: int) -> list[list[float]]:
    """The learning rate of every batch, per epoch, as `fit` steps the scheduler."""
    optimizer = recipe.make_optimizer([nn.Parameter(torch.zeros(1))], lr)
    scheduler, per_batch = recipe.make_scheduler(optimizer, lr, epochs, batches)
    out = []
    for _ in range(epochs):
        epoch = []
        for _ in range(batches):
            epoch.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            if per_batch:
                scheduler.step()
        if scheduler is not None and not per_batch:
            scheduler.step()
        out.append(epoch)
    return out


def test_schedules_set_the_learning_rate_per_epoch_as_named():
    lr, epochs = 0.1, 6
    assert all(v == lr for e in _lrs(Recipe(), lr, epochs, 3) for v in e)
    cosine = _lrs(Recipe(optimizer="sgd", schedule="cosine"), lr, epochs, 3)
    assert [e[0] for e in cosine] == pytest.approx([lr * (1 + math.cos(math.pi * k / epochs)) / 2
                                                    for k in range(epochs)])
    assert all(len(set(e)) == 1 for e in cosine)  # constant within an epoch
    step = _lrs(Recipe(optimizer="sgd", schedule="step", milestones=(2, 4), gamma=0.1), lr, epochs, 3)
    assert [e[0] for e in step] == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.001, 0.001])
    onecycle = [v for e in _lrs(Recipe(optimizer="sgd", schedule="onecycle"), lr, epochs, 5) for v in e]
    peak = max(range(len(onecycle)), key=onecycle.__getitem__)
    assert onecycle[0] == pytest.approx(lr / 25) and onecycle[peak] == pytest.approx(lr, rel=1e-3)
    assert 0 < peak < len(onecycle) - 1 and onecycle[-1] < onecycle[0]  # warm-up, then annealing below the start


def test_fit_steps_the_schedule(digits):
    """A step schedule with gamma 1e-9 after epoch 1 freezes SGD's weights from epoch 2 on: fit steps it."""
    x, y = digits.x_train[:256], digits.y_train[:256]
    model = _seed_cnn(digits)
    initial, after = _weights(model).clone(), []
    fit(model, x, y, epochs=3, lr=0.1, batch_size=64, seed=0, device=CPU, desc="t",
        recipe=Recipe(optimizer="sgd", schedule="step", milestones=(1,), gamma=1e-9),
        on_epoch_end=lambda epoch, m: after.append(_weights(m).clone()))
    assert (after[2] - after[0]).abs().max() < 1e-6 < (after[0] - initial).abs().max()


# ---- augmentation ----------------------------------------------------------------------------------------------------
def _is_shifted_copy(out: torch.Tensor, image: torch.Tensor) -> bool:
    """`out` is `image`, zero-padded by CROP_PADDING, cropped back to size, possibly flipped horizontally."""
    h, w = image.shape[-2:]
    padded = nn.functional.pad(image, [CROP_PADDING] * 4)
    crops = [padded[..., i:i + h, j:j + w] for i in range(2 * CROP_PADDING + 1) for j in range(2 * CROP_PADDING + 1)]
    return any(torch.equal(out, c) or torch.equal(out, c.flip(-1)) for c in crops)


def test_crop_flip_gives_each_image_its_own_padded_crop_and_flip(digits):
    x = digits.x_train[:64]
    torch.manual_seed(0)
    out = Recipe(augment="crop_flip").augmentation(tuple(x.shape[-2:]))(x)
    assert out.shape == x.shape and not torch.equal(out, x)
    assert all(_is_shifted_copy(o, i) for o, i in zip(out, x))
    same = Recipe(augment="crop_flip").augmentation(tuple(x.shape[-2:]))(x[:1].repeat(32, 1, 1, 1))
    assert len({tuple(o.flatten().tolist()) for o in same}) > 1  # one image, 32 copies: not one crop for the batch
    assert Recipe().augmentation(tuple(x.shape[-2:])) is None


def test_training_augments_batches_and_leaves_the_data_alone(digits):
    x, y = digits.x_train[:128].clone(), digits.y_train[:128]
    original = x.clone()
    seen = {}

    class Spy(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, batch):
            seen.setdefault("batches", []).append(batch.detach().clone())
            return self.inner(batch)

    fit(Spy(_seed_cnn(digits)), x, y, epochs=1, lr=1e-3, batch_size=128, seed=0, device=CPU, desc="t",
        recipe=Recipe(augment="crop_flip"))
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    batch = seen["batches"][0]
    assert torch.equal(x, original)  # the training tensors (and so any test images) are never augmented in place
    assert not torch.equal(batch, x[order]) and all(_is_shifted_copy(b, i) for b, i in zip(batch, x[order]))


# ---- adversarial training ----------------------------------------------------------------------------------------
def test_adversarial_training_trains_on_attacked_batches(cfg_factory, digits, monkeypatch):
    """pgd: the loss sees PGD examples within adv_eps of the batch; trades: its loss function is used."""
    from benchmark.pruning import loops

    seen = []
    real = loops.pgd_perturbation

    def spy(eps, steps, step=None):
        perturb = real(eps, steps, step)

        def wrapped(model, x, y):
            out = perturb(model, x, y)
            seen.append((x, out, eps, steps, step))
            return out
        return wrapped

    monkeypatch.setattr(loops, "pgd_perturbation", spy)
    cfg = cfg_factory("train.adversarial=pgd", "train.adv_eps=0.2", "train.adv_steps=3", "train.adv_step_size=0.1")
    stages.train_loop(cfg, _seed_cnn(digits), digits, 1, CPU, desc="t")
    x, out, eps, steps, step = seen[0]
    assert (eps, steps, step) == (0.2, 3, 0.1) and len(seen) == math.ceil(len(digits.y_train) / 64)
    assert (out - x).abs().max() <= 0.2 + 1e-6 and not torch.equal(out, x)
    perturb, loss = loops.dense_objective(cfg_factory("train.adversarial=trades").train)
    assert perturb is None and loss is not None
    assert loops.dense_objective(cfg_factory().train) == (None, None)


def test_trades_loss_is_cross_entropy_when_beta_is_zero_and_grows_with_beta(digits):
    from benchmark.pruning.loops import trades_loss

    model, x, y = _seed_cnn(digits).train(), digits.x_train[:64], digits.y_train[:64]
    torch.manual_seed(0)
    zero = trades_loss(0.1, 3, 0.05, 0.0)(model, x, y)
    assert zero.item() == pytest.approx(nn.functional.cross_entropy(model(x), y).item(), rel=1e-5)
    torch.manual_seed(0)
    assert trades_loss(0.1, 3, 0.05, 6.0)(model, x, y).item() > zero.item()


def test_an_adversarially_trained_seed_cnn_is_more_robust_than_a_clean_one(cfg_factory, digits, tmp_path):
    """Known answer (Madry et al. 2018): PGD-AT (3 steps of 0.04) at eps 0.1 raises ART PGD-10's robust accuracy at eps 0.1 on the
    whole digits test split above the clean-trained model's, outside both Wilson 95% intervals."""
    from attacks import build_threat

    n = len(digits.y_test)
    robust, seconds = {}, {}
    for adversarial in ("none", "pgd"):
        cfg = cfg_factory(f"train.adversarial={adversarial}", "train.adv_eps=0.1", "train.adv_steps=3",
                          "train.adv_step_size=0.04", "threat=pgd", f"threat.subset={n}", "dataset.eps=[0.1]")
        model = _seed_cnn(digits)
        started = time.process_time()
        stages.train_loop(cfg, model, digits, cfg.train.epochs, CPU, desc=adversarial)
        seconds[adversarial] = time.process_time() - started
        robust[adversarial] = build_threat(cfg.threat).evaluate(model, digits, CPU, seed=0).metrics[
            "robust/pgd_linf/eps_0.1"]
    low_at = proportion_confint(round(robust["pgd"] * n), n, alpha=0.05, method="wilson")[0]
    high_clean = proportion_confint(round(robust["none"] * n), n, alpha=0.05, method="wilson")[1]
    assert low_at > high_clean, (robust, seconds)
