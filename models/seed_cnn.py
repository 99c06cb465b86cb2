"""The seed article's CNN (§5), translated from Keras to PyTorch layer for layer, and the same CNN with a
BatchNorm after each conv (`seed_cnn_bn`): one architecture with and without BatchNorm, for methods that read or
need BatchNorm (Network Slimming, ANP, CLP)."""
import torch.nn as nn

from models import MODELS


def _after_conv_pool(size: int) -> int:
    return (size - 2) // 2  # 3x3 'valid' conv, then 2x2 max-pool


def _final_size(name: str, image_size: int) -> int:
    final = _after_conv_pool(_after_conv_pool(image_size))
    if final < 1:
        raise ValueError(
            f"{name} needs images of at least 10x10 (two 3x3 convs and two 2x2 pools); got {image_size}x{image_size}. "
            "Use a dataset with larger images (digits is upsampled to 16x16 by its default config)."
        )
    return final


@MODELS.register("seed_cnn")
def seed_cnn(in_channels: int, image_size: int, num_classes: int) -> nn.Module:
    final = _final_size("seed_cnn", image_size)
    return nn.Sequential(
        nn.Conv2d(in_channels, 32, 3),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64 * final * final, num_classes),  # Keras' Dense(10, softmax): softmax lives in the loss
    )


@MODELS.register("seed_cnn_bn")
def seed_cnn_bn(in_channels: int, image_size: int, num_classes: int) -> nn.Module:
    final = _final_size("seed_cnn_bn", image_size)
    return nn.Sequential(
        nn.Conv2d(in_channels, 32, 3, bias=False),  # the BatchNorm's shift replaces the conv bias
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, bias=False),
        nn.BatchNorm2d(64),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64 * final * final, num_classes),
    )
