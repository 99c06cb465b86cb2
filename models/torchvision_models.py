"""Any classification architecture of `torchvision.models`, by name, built untrained (no download) and adapted to the
dataset: its first conv takes the dataset's channels, its head outputs the dataset's classes, and on small images
an optional CIFAR stem keeps the resolution (He et al. 2016, section 4.2: a 3x3 stride-1 first conv, no max-pool).

`cifar_stem`: `auto` (on for images of at most 64 pixels), `true` or `false`. The stem sets the first conv to
kernel min(k, 3), stride 1, padding k // 2 and drops the max-pool that follows it (ResNet, ResNeXt, Wide ResNet,
GoogLeNet, ShuffleNet call it `maxpool`); for the other families the first conv's stride alone becomes 1.
"""
from __future__ import annotations

from typing import Literal

import torch.nn as nn

from benchmark.checks import ConfigError
from models import MODELS, ModelConfig

SMALL_IMAGE = 64  # `cifar_stem: auto` uses the CIFAR stem at or below this many pixels per side
_NO_AUX = {"googlenet", "inception_v3"}  # auxiliary heads return tuples in training mode: built without them
_IMAGE_SIZE_ARG = ("vit_",)  # families whose constructor takes the image size


def classification_archs() -> list[str]:
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


def _replace_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, attr, new)


def _first_conv(model: nn.Module) -> tuple[str, nn.Conv2d]:
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            return name, module
    raise ValueError("the architecture has no Conv2d layer to take the dataset's channels")


def _adapt_stem(model: nn.Module, in_channels: int, cifar_stem: bool) -> None:
    name, conv = _first_conv(model)
    kernel, stride, padding = conv.kernel_size, conv.stride, conv.padding
    if cifar_stem:
        kernel = tuple(min(k, 3) for k in kernel)
        stride, padding = (1, 1), tuple(k // 2 for k in kernel)
        if isinstance(getattr(model, "maxpool", None), nn.MaxPool2d):
            model.maxpool = nn.Identity()
    if in_channels != conv.in_channels or cifar_stem:
        _replace_module(model, name, nn.Conv2d(in_channels, conv.out_channels, kernel, stride, padding,
                                               dilation=conv.dilation, groups=1, bias=conv.bias is not None))


def use_cifar_stem(option, image_size: int) -> bool:
    if option == "auto":
        return image_size <= SMALL_IMAGE
    if isinstance(option, bool):
        return option
    raise ValueError(f"model.cifar_stem={option!r} is not allowed; allowed: auto, true, false")


class Torchvision(ModelConfig):
    name: Literal["torchvision"]
    arch: str  # the torchvision.models builder (classification_archs)
    cifar_stem: Literal["auto"] | bool = "auto"  # 3x3 stride-1 stem, no max-pool


@MODELS.register("torchvision", config=Torchvision)
def torchvision_model(in_channels: int, image_size: int, num_classes: int, *, arch: str,
                      cifar_stem="auto") -> nn.Module:
    """`torchvision.models.get_model(arch, weights=None, num_classes=...)`, adapted to the data (module docstring).
    Inputs are images in [0, 1]; the model applies no normalisation of its own."""
    import torchvision

    archs = classification_archs()
    if arch not in archs:
        raise ConfigError(f"model.arch={arch!r} is not a torchvision classification model; allowed: {archs}")
    options: dict = {"weights": None, "num_classes": num_classes}
    if arch in _NO_AUX:
        options.update(aux_logits=False, init_weights=True)
    if arch.startswith(_IMAGE_SIZE_ARG):
        options["image_size"] = image_size
    model = torchvision.models.get_model(arch, **options)
    patch_embedding = arch.startswith(_IMAGE_SIZE_ARG)  # ViT's first conv cuts patches: no stem to shrink
    _adapt_stem(model, in_channels, use_cifar_stem(cifar_stem, image_size) and not patch_embedding)
    return model
