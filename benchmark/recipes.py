"""A training recipe as a config names it (`train.*` or `finetune.*`): torch's optimiser, its learning-rate
scheduler and the torchvision augmentation of each training batch. `benchmark.training.fit` runs it.

The default recipe (Adam, a constant learning rate, no augmentation) is the CPU presets'; `sgd` + `cosine` or `step`
+ `crop_flip` is the CIFAR standard (He et al. 2016; Madry et al. 2018; the leaderboards' training code).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.optim.lr_scheduler import CosineAnnealingLR, LRScheduler, MultiStepLR, OneCycleLR
from torchvision.transforms import v2

CROP_PADDING = 4  # pixels of zero padding before the random crop (the CIFAR standard)


@dataclass(frozen=True)
class Recipe:
    """Everything of a training loop's recipe but its learning rate and its data (the arguments of `fit`)."""
    optimizer: str = "adam"  # adam | sgd
    momentum: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0
    schedule: str = "none"  # none | cosine | step | onecycle
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    augment: str = "none"  # none | crop_flip

    @classmethod
    def from_config(cls, block) -> "Recipe":
        """The recipe of a `train` or `finetune` config block (validated by benchmark/schema.py)."""
        return cls(optimizer=block.optimizer, momentum=float(block.momentum),
                   nesterov=bool(block.nesterov), weight_decay=float(block.weight_decay), schedule=block.schedule,
                   milestones=tuple(int(m) for m in block.milestones), gamma=float(block.gamma), augment=block.augment)

    def make_optimizer(self, params: list[nn.Parameter], lr: float) -> torch.optim.Optimizer:
        if self.optimizer == "sgd":
            return torch.optim.SGD(params, lr=lr, momentum=self.momentum, nesterov=self.nesterov,
                                   weight_decay=self.weight_decay)
        return torch.optim.Adam(params, lr=lr, weight_decay=self.weight_decay)

    def make_scheduler(self, optimizer: torch.optim.Optimizer, lr: float, epochs: int,
                       batches_per_epoch: int) -> tuple[LRScheduler | None, bool]:
        """(scheduler, stepped after every batch?): cosine and step change the learning rate once per epoch,
        onecycle after every batch (its warm-up is in batches); none gives no scheduler."""
        if self.schedule == "cosine":
            return CosineAnnealingLR(optimizer, T_max=epochs), False
        if self.schedule == "step":
            return MultiStepLR(optimizer, milestones=list(self.milestones), gamma=self.gamma), False
        if self.schedule == "onecycle":
            return OneCycleLR(optimizer, max_lr=lr, epochs=epochs, steps_per_epoch=batches_per_epoch), True
        return None, False

    def augmentation(self, image_size: tuple[int, int]):
        """The batch transform of `augment` (None for none): each image of a batch gets its own random crop and
        flip (a v2 transform called on a whole batch would draw one crop for all of it)."""
        if self.augment == "none":
            return None
        transform = v2.Compose([v2.RandomCrop(image_size, padding=CROP_PADDING, fill=0),
                                v2.RandomHorizontalFlip(p=0.5)])

        def augment(x: torch.Tensor) -> torch.Tensor:
            return torch.stack([transform(image) for image in x])

        return augment


