"""VGG-11 with BatchNorm, sized for small images: the usual target of Network Slimming (Liu et al. 2017)."""
import torch.nn as nn

from models import MODELS

_VGG11 = [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512]


@MODELS.register("vgg11_bn")
def vgg11_bn(in_channels: int, image_size: int, num_classes: int) -> nn.Module:
    layers, channels, size = [], in_channels, image_size
    for v in _VGG11:
        if v == "M":
            if size >= 2:  # small inputs (8x8, 16x16) skip pools that would shrink them below 1x1
                layers.append(nn.MaxPool2d(2))
                size //= 2
        else:
            layers += [nn.Conv2d(channels, v, 3, padding=1, bias=False), nn.BatchNorm2d(v), nn.ReLU()]
            channels = v
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes)]
    return nn.Sequential(*layers)
