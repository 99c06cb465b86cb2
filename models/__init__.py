"""Model registry: name -> builder(in_channels, image_size, num_classes) -> nn.Module.

Every builder adapts to the dataset's channels, image size and number of classes.
"""
from __future__ import annotations

from typing import Callable

import torch.nn as nn

from models.lenet import lenet300
from models.resnet import resnet20
from models.seed_cnn import seed_cnn
from models.vgg import vgg11_bn

ModelBuilder = Callable[[int, int, int], nn.Module]

MODELS: dict[str, ModelBuilder] = {
    "seed_cnn": seed_cnn,
    "lenet300": lenet300,
    "resnet20": resnet20,
    "vgg11_bn": vgg11_bn,
}


def build_model(name: str, in_channels: int, image_size: int, num_classes: int) -> nn.Module:
    if name not in MODELS:
        raise ValueError(f"model.name={name!r} is unknown; allowed: {sorted(MODELS)}")
    return MODELS[name](in_channels, image_size, num_classes)


def classifier_head(model: nn.Module) -> nn.Module:
    """The last Linear layer: the class logits, which structured pruning must never shrink."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return linears[-1]
