"""Training-loop pieces beyond plain cross-entropy: the Network Slimming L1 term (dense training), and adversarial
training: PGD (Madry et al. 2018) for dense training, fine-tuning and HYDRA's scores, TRADES (Zhang et al. 2019) for
dense training."""
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


def pgd_perturbation(eps: float, steps: int,
                     step: float | None = None) -> Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]:
    """L-inf PGD with a random start (Madry et al. 2018) for adversarial training, step `step` (default
    2.5 * eps / steps).

    Hand-written in torch rather than ART: it runs once per mini-batch inside the training loop, where ART's
    wrapper and success checks would run on every mini-batch; the attack evaluation itself stays ART's.
    Only the input gets a gradient (autograd.grad), so parameter gradients are untouched. Inputs are in [0, 1].
    """
    step = 2.5 * eps / steps if step is None else step

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


def trades_loss(eps: float, steps: int, step: float,
                beta: float) -> Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]:
    """TRADES' objective (Zhang et al. 2019, the reference's `trades_loss`): cross-entropy on the clean batch plus
    beta x KL(model(x) || model(x_adv)), where x_adv maximises that KL within the L-inf ball of radius `eps`
    (`steps` signed-gradient steps of size `step` from x + 0.001 N(0, 1), the model in eval mode)."""

    def loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        was_training = model.training
        model.eval()
        with torch.no_grad():
            clean_probs = F.softmax(model(x), dim=1)
        x_adv = x + 0.001 * torch.randn_like(x)
        for _ in range(steps):
            x_adv.requires_grad_(True)
            divergence = F.kl_div(F.log_softmax(model(x_adv), dim=1), clean_probs, reduction="sum")
            grad, = torch.autograd.grad(divergence, x_adv)
            x_adv = (x + (x_adv.detach() + step * grad.sign() - x).clamp(-eps, eps)).clamp(0, 1)
        model.train(was_training)
        logits = model(x)
        robust = F.kl_div(F.log_softmax(model(x_adv.detach()), dim=1), F.softmax(logits, dim=1),
                          reduction="batchmean")
        return F.cross_entropy(logits, y) + beta * robust

    return loss


def dense_objective(train_cfg):
    """(perturb, loss_fn) for `benchmark.training.fit` from `train.adversarial`: clean training (None, None), PGD-AT
    on PGD examples with cross-entropy, or TRADES' loss."""
    kind = train_cfg.adversarial
    eps, steps, step = float(train_cfg.adv_eps), int(train_cfg.adv_steps), float(train_cfg.adv_step_size)
    if kind == "pgd":
        return pgd_perturbation(eps, steps, step), None
    if kind == "trades":
        return None, trades_loss(eps, steps, step, float(train_cfg.trades_beta))
    return None, None
