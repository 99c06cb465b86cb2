"""HYDRA (Sehwag et al., NeurIPS 2020, "HYDRA: Pruning Adversarially Robust Neural Networks"): importance scores
initialised from the trained weights and optimised, with the weights frozen, under the adversarial loss; the top-k
mask of the learned scores is kept; the cell's fine-tune (with `finetune.adversarial=true`, the paper's adversarial
fine-tune) then trains the surviving weights.

The scores learn for `score_epochs` on the pruning stage's training set (`data.pruning_finetune`: the data the
pruner is allowed to train on) with SGD (momentum 0.9, weight decay 1e-4, cosine schedule from `score_lr`), the
reference code's optimiser, under `loss`: `ce`, cross-entropy on L-inf PGD examples (`adv_eps`, `adv_steps`; the
suite's adversarial fine-tune's PGD with a random start), or `trades`, the reference code's default (its `adv`
trainer): TRADES' loss (`benchmark.pruning.loops.trades_loss`, the dense `train.adversarial=trades` objective),
cross-entropy on the clean batch plus `trades_beta` (the reference's 6) x KL(clean || adversarial), the
adversarial example maximising that KL in `adv_steps` signed steps of 2.5 `adv_eps` / `adv_steps` (the
reference's 2/255 at 8/255 and 10 steps) from a 0.001-scale Gaussian start.
`scope: layerwise` keeps the same share of every layer, as the paper does; `global` ranks all scores together.
`score_epochs: 0` keeps the initial scores' mask: magnitude pruning per layer (the paper's LWM baseline).

The score optimisation (`learn_scores`): every prunable weight w gets a score s, initialised from the weights as
the reference code does (per layer s = sqrt(6 / fan_in) * w / max|w|, close to Kaiming-uniform's scale). The
forward pass uses w * m, where m keeps the weights whose |s| is in the top share (per layer, or over all layers
together); the gradient reaches the scores straight through the top-k step (the estimator of Ramanujan et al.'s
hidden networks, which HYDRA uses). The model's own parameters are frozen; only the scores train, on the
(adversarial) loss of `benchmark.training.fit`. torch provides the parametrisation (`torch.nn.utils.parametrize`)
and the final mask (`prune_by_scores`); the top-k gate with its straight-through gradient is written here (neither
torch nor torch-pruning has it). torch is imported inside the functions: the config checks import this module.
"""
from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING, Callable, Literal

from benchmark.checks import BATCH, EPOCHS, LR, SCOPE, number, whole
from benchmark.pruning import PRUNERS, PruningConfig

if TYPE_CHECKING:
    import torch
    import torch.nn as nn

SCORE_MOMENTUM, SCORE_WEIGHT_DECAY = 0.9, 1e-4  # the reference code's SGD for the scores


class Hydra(PruningConfig):
    method: Literal["hydra"]
    scope: SCOPE  # layerwise: the paper's top-k per layer
    score_epochs: EPOCHS  # epochs of score optimisation (the weights frozen); 0: the initial scores' mask
    score_lr: LR  # SGD's initial learning rate for the scores (cosine schedule to 0 over score_epochs)
    batch_size: BATCH
    adv_eps: number(0.0, 1.0)  # L-inf PGD radius of the score phase (inputs in [0, 1]); 0: clean images
    adv_steps: whole(1, 1000)  # PGD steps per mini-batch of the score phase
    loss: Literal["ce", "trades"]  # ce: cross-entropy on PGD examples; trades: the reference code's TRADES loss
    trades_beta: number(0.0, 1000.0)  # loss=trades: weight of the KL robustness term (the reference's 6)


def hydra_label(cfg) -> str:
    """Run-name suffix of the non-default scope (the paper's layerwise has none) and of the TRADES loss."""
    return ("+global" if cfg.scope == "global" else "") + ("+trades" if cfg.get("loss") == "trades" else "")


@PRUNERS.register("hydra", config=Hydra, variant_label=hydra_label)
def hydra(model, cfg, ctx):
    import torch

    from benchmark.pruning.common import PruneOutcome, prunable_layers
    from benchmark.pruning.scored import prune_by_scores
    from benchmark.training import fit

    if ctx.pruning_train is None:
        raise ValueError("pruning.method='hydra' learns its scores on training data: PruneContext.pruning_train is "
                         "needed (stages.prune_context provides it)")
    sparsity, epochs = float(cfg.sparsity), int(cfg.score_epochs)
    if sparsity == 0:
        return PruneOutcome(model, structured=False, info={})
    layers = [m for _, m in prunable_layers(model, cfg.prune_head)]
    x, y = ctx.pruning_train
    device = ctx.example_inputs.device
    schedules = []

    def sgd(params):
        optimizer = torch.optim.SGD(params, lr=float(cfg.score_lr), momentum=SCORE_MOMENTUM,
                                    weight_decay=SCORE_WEIGHT_DECAY)
        schedules.append(torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(epochs, 1)))
        return optimizer

    perturb, loss_fn = score_objective(cfg)

    def optimise(subnet_model):
        fit(subnet_model, x, y, epochs=epochs, lr=float(cfg.score_lr), batch_size=int(cfg.batch_size), seed=ctx.seed,
            device=device, desc="hydra scores", make_optimizer=sgd, perturb=perturb, loss_fn=loss_fn,
            on_epoch_end=lambda epoch, m: schedules[0].step())

    initial = [scaled_scores(m.weight).abs() for m in layers]
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(ctx.seed)  # PGD's random starts: the same for every call with this seed
        scores = learn_scores(model, layers, sparsity, cfg.scope, optimise)
    prune_by_scores(layers, [s.abs() for s in scores], sparsity, cfg.scope)
    kept_at_start = [s > t for s, t in zip(initial, thresholds(initial, sparsity, cfg.scope))]
    kept = [m.weight_mask.bool() for m in layers]
    swapped = sum(int((k & ~k0).sum()) for k, k0 in zip(kept, kept_at_start)) / max(sum(int(k.sum()) for k in kept), 1)
    return PruneOutcome(model, structured=False, info={"pruning/score_epochs": float(epochs),
                                                       "pruning/mask_swapped": swapped})


def score_objective(cfg):
    """(perturb, loss_fn) of the score phase for `benchmark.training.fit`: clean cross-entropy when `adv_eps` is 0,
    else cross-entropy on PGD examples (`loss: ce`) or TRADES' loss (`loss: trades`)."""
    from benchmark.pruning.loops import pgd_perturbation, trades_loss

    eps, steps = float(cfg.adv_eps), int(cfg.adv_steps)
    if eps == 0:
        return None, None
    if cfg.loss == "trades":
        return None, trades_loss(eps, steps, 2.5 * eps / steps, float(cfg.trades_beta))
    return pgd_perturbation(eps, steps), None


# ---- the score optimisation ------------------------------------------------------------------------------------
@functools.cache
def _subnet_type() -> type:
    """The parametrisation weight -> weight * top-k mask of the layer's scores (thresholds set by `_Gate`), a torch
    class: defined on first use, so that importing this module does not import torch."""
    import torch
    import torch.nn as nn

    class KeepAbove(torch.autograd.Function):
        """1 where |score| > threshold, else 0; the gradient passes straight through to |score|."""

        @staticmethod
        def forward(ctx, magnitude: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
            return (magnitude > threshold).to(magnitude.dtype)

        @staticmethod
        def backward(ctx, grad: torch.Tensor):
            return grad, None

    class Subnet(nn.Module):
        def __init__(self, scores: torch.Tensor):
            super().__init__()
            self.scores = nn.Parameter(scores)
            self.register_buffer("threshold", torch.tensor(-math.inf, device=scores.device), persistent=False)

        def forward(self, weight: torch.Tensor) -> torch.Tensor:
            return weight * KeepAbove.apply(self.scores.abs(), self.threshold)

    return Subnet


def thresholds(magnitudes: list[torch.Tensor], amount: float, scope: str) -> list[float]:
    """Per layer, the value at or below which the smallest `amount` of the magnitudes fall (one ranking per layer,
    or one over all layers); as many as torch.nn.utils.prune removes, ties aside."""
    import torch

    groups = [list(range(len(magnitudes)))] if scope == "global" else [[i] for i in range(len(magnitudes))]
    values = [0.0] * len(magnitudes)
    for group in groups:
        flat = torch.cat([magnitudes[i].flatten() for i in group])
        pruned = int(round(amount * flat.numel()))  # torch.nn.utils.prune's count
        value = float(flat.kthvalue(pruned).values) if pruned else -math.inf
        for i in group:
            values[i] = value
    return values


class _Gate:
    """Sets the subnets' thresholds before every forward pass of the model, from the scores as they are now."""

    def __init__(self, subnets: list, amount: float, scope: str):
        self.subnets, self.amount, self.scope = subnets, amount, scope

    def __call__(self, *_) -> None:
        import torch

        with torch.no_grad():
            values = thresholds([s.scores.abs() for s in self.subnets], self.amount, self.scope)
            for subnet, value in zip(self.subnets, values):
                subnet.threshold.fill_(value)


def scaled_scores(weight: torch.Tensor) -> torch.Tensor:
    """HYDRA's score initialisation: sqrt(6 / fan_in) * w / max|w| (the layer's weights, rescaled)."""
    fan_in = weight[0].numel()  # in_channels / groups * kernel size, as torch's initialisers count it
    return math.sqrt(6.0 / fan_in) * weight.detach() / weight.detach().abs().max().clamp_min(1e-12)


def learn_scores(model: nn.Module, layers: list[nn.Module], amount: float, scope: str,
                 train: Callable[[nn.Module], object]) -> list[torch.Tensor]:
    """Each layer's learned scores, after `train(model)` optimised them (and nothing else) with the top-k subnetwork
    of `amount` pruned weights in the forward pass. The model comes back as it was: same parameters, none trainable
    that was not before, no parametrisation left."""
    from torch.nn.utils import parametrize

    trainable = {name: p.requires_grad for name, p in model.named_parameters()}
    model.requires_grad_(False)
    subnet = _subnet_type()
    subnets = [subnet(scaled_scores(layer.weight)) for layer in layers]
    for layer, s in zip(layers, subnets):
        parametrize.register_parametrization(layer, "weight", s)
    hook = model.register_forward_pre_hook(_Gate(subnets, amount, scope))
    try:
        train(model)
    finally:
        hook.remove()
        for layer in layers:
            parametrize.remove_parametrizations(layer, "weight", leave_parametrized=False)
        for name, p in model.named_parameters():
            p.requires_grad_(trainable[name])
    return [s.scores.detach() for s in subnets]
