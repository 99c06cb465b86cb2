"""Any `nn.Module` by import path: `model=custom model._target_=pkg.module.Class` plus the class's keyword
arguments as further `model.<name>` keys, instantiated with `hydra.utils.instantiate` (so an argument may itself
be a `_target_` mapping). The builder does not pass the dataset's shape: give the class what it needs as keyword
arguments (with a built-in dataset, e.g. `+model.num_classes='${dataset.num_classes}'`). What the path names
enters every cache key by content (models/import_path.py: the source file's sha256, or the installed package's
version); validation builds the model and runs one image through it, like any other model (models/checks.py).
"""
from __future__ import annotations

import re
from typing import Annotated, Literal

import torch.nn as nn
from pydantic import ConfigDict, Field

from benchmark.checks import ConfigError
from models import MODELS, ModelConfig

IMPORT_PATH = r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)+$"


class Custom(ModelConfig):
    model_config = ConfigDict(extra="allow", strict=True, populate_by_name=True)  # extra keys: the class's kwargs
    name: Literal["custom"]
    target: Annotated[str, Field(alias="_target_", min_length=1)]  # IMPORT_PATH, checked by the builder


def _one_line(err: BaseException) -> str:
    while err.__cause__ is not None:  # Hydra wraps the import's or the constructor's own error
        err = err.__cause__
    return f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"


@MODELS.register("custom", config=Custom)
def custom(in_channels: int, image_size: int, num_classes: int, /, *, _target_: str, **kwargs) -> nn.Module:
    """`_target_(**kwargs)`, which must be an nn.Module (the dataset's shape is checked on its output). The shape
    arguments are positional-only, so the class's own `in_channels`, ... keyword arguments reach it in `kwargs`."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    if not re.match(IMPORT_PATH, str(_target_)):
        raise ConfigError(f"model._target_={_target_!r} is not an import path; allowed: pkg.module.Name")
    try:
        model = instantiate({"_target_": _target_, **kwargs}, _convert_="all")
    except InstantiationException as err:
        if str(err).startswith("Error locating target"):  # Hydra's words for an import that failed
            raise ConfigError(f"model._target_={_target_!r} cannot be imported ({_one_line(err)}); allowed: an "
                              "importable class or function that returns an nn.Module") from None
        raise ConfigError(f"model._target_={_target_!r} cannot be built with {kwargs} ({_one_line(err)}); "
                          "allowed: the keyword arguments it takes, as model.<name> keys") from None
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model._target_={_target_!r} returned a {type(model).__name__}; allowed: a class or "
                          "function that returns a torch.nn.Module")
    return model
