"""VGG with BatchNorm, sized for small images: VGG-11 (the usual target of Network Slimming, Liu et al. 2017) and
VGG-16 as the adversarial-pruning literature trains it on CIFAR-10 (HYDRA's `vgg16_bn`, the Adversarial Pruning
Benchmark's VGG16): the 13 convs of configuration D, each followed by BatchNorm and ReLU, an adaptive 2x2 average
pool and a 256-256 classifier. torchvision's `vgg16_bn` keeps ImageNet's 7x7 pool and 4096-4096 classifier
(134 M parameters against 15 M here), so it does not fit the CIFAR stem."""
import torch.nn as nn

from models import MODELS

_VGG11 = [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512]
_VGG16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


def _features(config: list, in_channels: int, image_size: int, width: int = 64) -> tuple[list[nn.Module], int]:
    """Conv-BN-ReLU layers and max-pools of `config` (channels scaled by width / 64); small inputs (8x8, 16x16)
    skip the pools that would shrink them below 1x1. Returns (layers, output channels)."""
    layers, channels, size = [], in_channels, image_size
    for v in config:
        if v == "M":
            if size >= 2:
                layers.append(nn.MaxPool2d(2))
                size //= 2
        else:
            v = v * width // 64
            layers += [nn.Conv2d(channels, v, 3, padding=1, bias=False), nn.BatchNorm2d(v), nn.ReLU()]
            channels = v
    return layers, channels


@MODELS.register("vgg11_bn")
def vgg11_bn(in_channels: int, image_size: int, num_classes: int) -> nn.Module:
    layers, channels = _features(_VGG11, in_channels, image_size)
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes))


@MODELS.register("vgg16_bn")
def vgg16_bn(in_channels: int, image_size: int, num_classes: int, width: int = 64) -> nn.Module:
    """`width`: the first conv's channels (64; the tests build narrower copies to stay fast on a CPU)."""
    layers, channels = _features(_VGG16, in_channels, image_size, width)
    hidden = 256 * width // 64
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(channels * 4, hidden), nn.ReLU(),
                         nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))
