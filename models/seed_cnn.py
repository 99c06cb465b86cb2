"""The seed article's CNN (§5), translated from Keras to PyTorch layer for layer."""
import torch.nn as nn

from models import MODELS


def _after_conv_pool(size: int) -> int:
    return (size - 2) // 2  # 3x3 'valid' conv, then 2x2 max-pool


@MODELS.register("seed_cnn")
def seed_cnn(in_channels: int, image_size: int, num_classes: int) -> nn.Module:
    final = _after_conv_pool(_after_conv_pool(image_size))
    if final < 1:
        raise ValueError(
            f"seed_cnn needs images of at least 10x10 (two 3x3 convs and two 2x2 pools); got {image_size}x{image_size}. "
            "Use a dataset with larger images (digits is upsampled to 16x16 by its default config)."
        )
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
