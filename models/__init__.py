"""Model registry: name -> builder(in_channels, image_size, num_classes, **options) -> nn.Module.

A model is a module of this package that registers its builder with `@MODELS.register(name)` (the modules are
discovered), plus conf/model/<name>.yaml. Every builder adapts to the dataset's channels, image size and number
of classes. The `model` config group holds the name, `checkpoint` (models/checkpoint.py) and the builder's
options, which a model that has any declares beside its builder: `@MODELS.register(name, config=...)` with a
`ModelConfig` that adds them and a `name: Literal[name]` field (`torchvision_models.py`: `arch`, `cifar_stem`);
benchmark/validate.py checks the group against it before any compute. This file imports no torch (the config
checks import `ModelConfig`); the model modules do.
"""
from __future__ import annotations

from typing import Annotated

from pydantic import Field

from benchmark.checks import Group, number
from benchmark.registry import Registry

MODELS = Registry("model.name", "models", plugins="prunesec.models")


class Normalize(Group):
    """Per-channel normalisation applied inside the model (models/normalize.py)."""
    mean: Annotated[list[number(-1000.0, 1000.0)], Field(min_length=1)]
    std: Annotated[list[number(0.0, 1000.0, low_open=True)], Field(min_length=1)]


class ModelConfig(Group):
    """Keys every model has; a model with builder options declares a subclass with them."""
    name: Annotated[str, Field(min_length=1)]
    checkpoint: str | None = None  # trained weights that replace dense training
    normalize: Normalize | None = None  # for a model trained on normalised inputs: applied inside it


NOT_BUILDER_OPTIONS = {"name", "checkpoint", "normalize"}  # model config keys that are not builder arguments


def build_model(name: str, in_channels: int, image_size: int, num_classes: int, /, **options) -> nn.Module:
    if name not in MODELS:
        raise ValueError(f"model.name={name!r} is unknown; allowed: {MODELS.names()}")
    return MODELS[name].target(in_channels, image_size, num_classes, **options)


def model_options(model_cfg) -> dict:
    """The builder's keyword arguments in a `model` config group."""
    return {k: v for k, v in model_cfg.items() if k not in NOT_BUILDER_OPTIONS}


def build_from_config(model_cfg, in_channels: int, image_size: int, num_classes: int) -> nn.Module:
    model = build_model(model_cfg.name, in_channels, image_size, num_classes, **model_options(model_cfg))
    if model_cfg.get("normalize") is not None:
        from models.normalize import normalized

        model = normalized(model, model_cfg.normalize, in_channels)
    return model


def model_config(name: str) -> type[ModelConfig]:
    """The config model of a registered model's group: its own, or the keys every model has."""
    return MODELS[name].config or ModelConfig


def classifier_head(model: nn.Module) -> nn.Module:
    """The last Linear layer: the class logits, which structured pruning must never shrink."""
    import torch.nn as nn

    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError("the model has no Linear layer to serve as its classifier head")
    return linears[-1]
