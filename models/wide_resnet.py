"""Wide ResNets (Zagoruyko & Komodakis 2016) as the robustness leaderboards train them on CIFAR-10 (RobustBench's
and TRADES' WideResNet, HYDRA's WRN-28-10): a 3x3 16-channel stem, three stages of (depth - 4) / 6 pre-activation
blocks of 16k / 32k / 64k channels (k the widening factor), BN-ReLU, global average pooling, one linear head.
WRN-28-10 has 36.5 M parameters, WRN-34-10 46.2 M. Dropout is left out (the adversarial-training recipes use 0)."""
import torch.nn as nn
import torch.nn.functional as F

from models import MODELS
from models.preact_resnet import stage


class WideResNet(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, depth: int, widen_factor: int):
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"a wide ResNet's depth is 6n + 4; got {depth}")
        blocks, widths = (depth - 4) // 6, [16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.conv1 = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)
        self.layers = nn.Sequential(stage(16, widths[0], blocks, 1), stage(widths[0], widths[1], blocks, 2),
                                    stage(widths[1], widths[2], blocks, 2))
        self.bn = nn.BatchNorm2d(widths[2])
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[2], num_classes)

    def forward(self, x):
        out = F.relu(self.bn(self.layers(self.conv1(x))))
        return self.fc(self.pool(out).flatten(1))


@MODELS.register("wrn28_10")
def wrn28_10(in_channels: int, image_size: int, num_classes: int, widen_factor: int = 10) -> nn.Module:
    """`widen_factor`: 10 (the tests build narrower copies to stay fast on a CPU)."""
    return WideResNet(in_channels, num_classes, depth=28, widen_factor=widen_factor)


@MODELS.register("wrn34_10")
def wrn34_10(in_channels: int, image_size: int, num_classes: int, widen_factor: int = 10) -> nn.Module:
    """`widen_factor`: 10 (the tests build narrower copies to stay fast on a CPU)."""
    return WideResNet(in_channels, num_classes, depth=34, widen_factor=widen_factor)
