"""Unstructured pruning by a per-weight score, with a scope (global | layerwise) and a schedule (oneshot |
iterative). Masks are `torch.nn.utils.prune` masks ranked by `importance_scores=`; what torch lacks (the
gradient-based scores and the prune / fine-tune loop) is written here."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils import prune as torch_prune

from benchmark.pruning.common import PruneContext, prunable_layers

def current_weight(module: nn.Module) -> torch.Tensor:
    """The weight as the next forward pass will use it: `weight_orig * weight_mask` when a mask is attached.
    (`module.weight` is recomputed only by the forward pre-hook, so after an optimizer step it is stale.)"""
    if hasattr(module, "weight_mask"):
        return (module.weight_orig * module.weight_mask).detach()
    return module.weight.detach()


def _trainable_weight(module: nn.Module) -> nn.Parameter:
    """The leaf parameter the optimizer updates: `weight_orig` when a mask is attached, else `weight`."""
    return getattr(module, "weight_orig", module.weight)


def gradient_scores(model: nn.Module, layers: list[nn.Module], ctx: PruneContext) -> list[torch.Tensor]:
    """|w * dL/dw| per weight on the calibration batch (first-order Taylor estimate of the loss change when the
    weight is zeroed; SNIP's connection sensitivity up to a global normalisation, which does not change ranks).

    With a mask attached the gradient is taken on the leaf `weight_orig` (w = weight_orig * mask): then
    |weight_orig * dL/dweight_orig| = |w * dL/dw| on kept weights and 0 on pruned ones."""
    x, y = ctx.calibration
    device = ctx.example_inputs.device
    was_training = model.training
    model.eval()
    model.zero_grad(set_to_none=True)
    params = [_trainable_weight(m) for m in layers]
    F.cross_entropy(model(x.to(device)), y.to(device)).backward()
    scores = [(p * p.grad).detach().abs() for p in params]
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    return scores


def scores_for(criterion: str, model: nn.Module, layers: list[nn.Module], ctx: PruneContext) -> list[torch.Tensor]:
    if criterion == "magnitude":
        return [current_weight(m).abs() for m in layers]
    if criterion in ("taylor", "snip"):
        return gradient_scores(model, layers, ctx)
    if criterion == "random":
        generator = torch.Generator().manual_seed(ctx.seed)
        return [torch.rand(m.weight.shape, generator=generator).to(m.weight.device) for m in layers]
    raise ValueError(f"unknown score criterion {criterion!r}")


def prune_by_scores(layers: list[nn.Module], scores: list[torch.Tensor], amount: float, scope: str) -> None:
    """Remove the `amount` fraction of the still-unpruned weights with the lowest scores (global: one ranking
    over all layers; layerwise: the same fraction in every layer). Stacks with masks already attached."""
    if scope == "global":
        torch_prune.global_unstructured([(m, "weight") for m in layers], pruning_method=torch_prune.L1Unstructured,
                                        importance_scores={(m, "weight"): s for m, s in zip(layers, scores)},
                                        amount=amount)
    else:
        for module, score in zip(layers, scores):
            torch_prune.l1_unstructured(module, "weight", amount=amount, importance_scores=score)


def step_amounts(sparsity: float, steps: int) -> list[float]:
    """Per-step fraction of the REMAINING weights to remove so that `steps` steps reach `sparsity`
    (geometric: every step removes the same share of what is left, as in Han et al. 2015 / Frankle & Carbin)."""
    per_step = 1.0 - (1.0 - sparsity) ** (1.0 / steps)
    return [per_step] * steps


def prune_unstructured(model: nn.Module, cfg, ctx: PruneContext, criterion: str, scope: str) -> dict[str, float]:
    """Oneshot, or `steps` rounds of prune -> fine-tune (`finetune.epochs` each; the last round's fine-tune is the
    cell's usual one in stages.pruned_model). Scores are recomputed every round on the current weights."""
    layers = [m for _, m in prunable_layers(model, cfg.prune_head)]
    schedule = cfg.get("schedule", "oneshot")
    steps = int(cfg.get("steps", 1)) if schedule == "iterative" else 1
    if float(cfg.sparsity) == 0:
        return {}
    if scope == "layerwise" and schedule == "iterative" and cfg.get("order", "together") == "last_first":
        return _last_layer_first(model, layers, float(cfg.sparsity), ctx, criterion)
    amounts = step_amounts(float(cfg.sparsity), steps)
    for step, amount in enumerate(amounts):
        prune_by_scores(layers, scores_for(criterion, model, layers, ctx), amount, scope)
        if step < steps - 1:
            if ctx.finetune is None:
                raise ValueError("schedule=iterative fine-tunes between steps: PruneContext.finetune is needed")
            ctx.finetune(model, None)
    return {"pruning/steps": float(steps)}


def _last_layer_first(model, layers, sparsity: float, ctx: PruneContext, criterion: str) -> dict[str, float]:
    """The seed's layer-by-layer schedule (§3.2): one layer per step, from the classifier backwards, each pruned
    to the target at once, fine-tuning the whole network in between (`steps` is the number of layers)."""
    for step, module in enumerate(reversed(layers)):
        prune_by_scores([module], scores_for(criterion, model, [module], ctx), sparsity, "layerwise")
        if step < len(layers) - 1:
            if ctx.finetune is None:
                raise ValueError("order=last_first fine-tunes between layers: PruneContext.finetune is needed")
            ctx.finetune(model, None)
    return {"pruning/steps": float(len(layers))}
