"""LeNet-300-100 (LeCun et al. 1998), the classic MLP of the pruning literature (Han et al. 2015)."""
import torch.nn as nn

from models import MODELS


@MODELS.register("lenet300")
def lenet300(in_channels: int, image_size: int, num_classes: int) -> nn.Module:
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(in_channels * image_size * image_size, 300),
        nn.ReLU(),
        nn.Linear(300, 100),
        nn.ReLU(),
        nn.Linear(100, num_classes),
    )
