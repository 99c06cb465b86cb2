"""Training-loop pieces that pruning needs: the Network Slimming L1 term (dense training), PGD adversarial
fine-tuning (robustness-aware pruning), and the train / fine-tune callables handed to pruners that train."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F


def bn_l1_penalty(weight: float) -> Callable[[nn.Module], torch.Tensor] | None:
    """Network Slimming's sparsity term: weight * sum |gamma| over every BatchNorm scale (None when weight == 0)."""
    if not weight:
        return None

    def penalty(model: nn.Module) -> torch.Tensor:
        return weight * sum(m.weight.abs().sum() for m in model.modules() if isinstance(m, nn.BatchNorm2d))

    return penalty


def pgd_perturbation(eps: float, steps: int) -> Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]:
    """L-inf PGD with a random start (Madry et al. 2018) for adversarial fine-tuning, step 2.5 * eps / steps.

    Hand-written in torch rather than ART: it runs once per mini-batch inside the training loop, where ART's
    wrapper and success checks would run on every mini-batch; the attack evaluation itself stays ART's.
    Only the input gets a gradient (autograd.grad), so parameter gradients are untouched. Inputs are in [0, 1].
    """
    step = 2.5 * eps / steps

    def perturb(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        was_training = model.training
        model.eval()  # attack the model as deployed (BatchNorm running statistics untouched)
        x_adv = (x + torch.empty_like(x).uniform_(-eps, eps)).clamp(0, 1)
        for _ in range(steps):
            x_adv.requires_grad_(True)
            grad, = torch.autograd.grad(F.cross_entropy(model(x_adv), y), x_adv)
            x_adv = (x + (x_adv.detach() + step * grad.sign() - x).clamp(-eps, eps)).clamp(0, 1)
        model.train(was_training)
        return x_adv.detach()

    return perturb


def finetune_perturbation(finetune_cfg):
    """The fine-tune's input transform: PGD when `finetune.adversarial`, else None (clean fine-tuning)."""
    if not finetune_cfg.get("adversarial", False):
        return None
    return pgd_perturbation(float(finetune_cfg.adv_eps), int(finetune_cfg.adv_steps))
