"""HYDRA (Sehwag et al., NeurIPS 2020, "HYDRA: Pruning Adversarially Robust Neural Networks"): importance scores
initialised from the trained weights and optimised, with the weights frozen, under the adversarial loss; the top-k
mask of the learned scores is kept; the cell's fine-tune (with `finetune.adversarial=true`, the paper's adversarial
fine-tune) then trains the surviving weights.

The scores learn for `score_epochs` on the pruning stage's training set (`data.pruning_finetune`: the data the
pruner is allowed to train on) with SGD (momentum 0.9, weight decay 1e-4, cosine schedule from `score_lr`), the
reference code's optimiser, on L-inf PGD examples (`adv_eps`, `adv_steps`; the suite's adversarial fine-tune's
PGD with a random start, cross-entropy loss; the reference code's default trainer uses the TRADES loss instead).
`scope: layerwise` keeps the same share of every layer, as the paper does; `global` ranks all scores together.
`score_epochs: 0` keeps the initial scores' mask: magnitude pruning per layer (the paper's LWM baseline).
"""
from __future__ import annotations

from typing import Literal

from benchmark.checks import BATCH, EPOCHS, LR, SCOPE, number, whole
from benchmark.pruning import PRUNERS, PruningConfig

SCORE_MOMENTUM, SCORE_WEIGHT_DECAY = 0.9, 1e-4  # the reference code's SGD for the scores


class Hydra(PruningConfig):
    method: Literal["hydra"]
    scope: SCOPE  # layerwise: the paper's top-k per layer
    score_epochs: EPOCHS  # epochs of score optimisation (the weights frozen); 0: the initial scores' mask
    score_lr: LR  # SGD's initial learning rate for the scores (cosine schedule to 0 over score_epochs)
    batch_size: BATCH
    adv_eps: number(0.0, 1.0)  # L-inf PGD radius of the score phase (inputs in [0, 1]); 0: clean images
    adv_steps: whole(1, 1000)  # PGD steps per mini-batch of the score phase


def hydra_label(cfg) -> str:
    """Run-name suffix of the non-default scope (the paper's layerwise has none)."""
    return "+global" if cfg.scope == "global" else ""


@PRUNERS.register("hydra", config=Hydra, variant_label=hydra_label)
def hydra(model, cfg, ctx):
    import torch

    from benchmark.pruning.common import PruneOutcome, prunable_layers
    from benchmark.pruning.loops import pgd_perturbation
    from benchmark.pruning.score_learning import learn_scores, scaled_scores, thresholds
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
    eps, device = float(cfg.adv_eps), ctx.example_inputs.device
    schedules = []

    def sgd(params):
        optimizer = torch.optim.SGD(params, lr=float(cfg.score_lr), momentum=SCORE_MOMENTUM,
                                    weight_decay=SCORE_WEIGHT_DECAY)
        schedules.append(torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(epochs, 1)))
        return optimizer

    def optimise(subnet_model):
        fit(subnet_model, x, y, epochs=epochs, lr=float(cfg.score_lr), batch_size=int(cfg.batch_size), seed=ctx.seed,
            device=device, desc="hydra scores", make_optimizer=sgd,
            perturb=pgd_perturbation(eps, int(cfg.adv_steps)) if eps > 0 else None,
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
