"""PreActResNet-18 (He et al. 2016, "Identity mappings in deep residual networks"), as BackdoorBench trains it on
CIFAR-10: a 3x3 stride-1 stem, four stages of two pre-activation blocks (64/128/256/512 channels), 1x1 projection
shortcuts on the pre-activated input, no BatchNorm after the last block, global average pooling, one linear head."""
import torch.nn as nn
import torch.nn.functional as F

from models import MODELS


class PreActBlock(nn.Module):
    """BN-ReLU-conv3x3-BN-ReLU-conv3x3 plus the shortcut: identity, or a 1x1 conv of the pre-activated input when
    the stride or the width changes (the wide ResNets' block too)."""

    def __init__(self, in_planes: int, planes: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.shortcut = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Conv2d(in_planes, planes, 1, stride, bias=False)

    def forward(self, x):
        out = F.relu(self.bn1(x))
        shortcut = x if self.shortcut is None else self.shortcut(out)
        out = self.conv2(F.relu(self.bn2(self.conv1(out))))
        return out + shortcut


def stage(in_planes: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
    return nn.Sequential(*(PreActBlock(in_planes if i == 0 else planes, planes, stride if i == 0 else 1)
                           for i in range(blocks)))


class PreActResNet18(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, width: int = 64):
        super().__init__()
        widths = [width, 2 * width, 4 * width, 8 * width]
        self.conv1 = nn.Conv2d(in_channels, width, 3, 1, 1, bias=False)
        self.layers = nn.Sequential(*(stage(widths[max(i - 1, 0)], w, 2, 1 if i == 0 else 2)
                                      for i, w in enumerate(widths)))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(widths[-1], num_classes)

    def forward(self, x):
        return self.linear(self.pool(self.layers(self.conv1(x))).flatten(1))


@MODELS.register("preact_resnet18")
def preact_resnet18(in_channels: int, image_size: int, num_classes: int, width: int = 64) -> nn.Module:
    """`width`: the first stage's channels (64; the tests build narrower copies to stay fast on a CPU)."""
    return PreActResNet18(in_channels, num_classes, width)
