"""Whether a model config fits a dataset and a pruning method, answered before any compute: each problem is
(key, value, what is allowed); benchmark/validate.py raises the first as a ConfigError. A mistake that is no
misfit (an unknown architecture, an unreadable checkpoint) is raised as the ConfigError that names it."""
from __future__ import annotations

import torch
import torch.nn as nn

from benchmark.checks import ConfigError
from models import build_from_config

Problem = tuple[str, object, str]


def _model_label(model_cfg) -> tuple[str, object]:
    if "_target_" in model_cfg:
        return "model._target_", model_cfg["_target_"]
    return ("model.arch", model_cfg.arch) if "arch" in model_cfg else ("model.name", model_cfg.name)


def _has_attention(model: nn.Module) -> bool:
    return any("Attention" in type(m).__name__ for m in model.modules())


def model_problems(model_cfg, shape, pruner) -> tuple[nn.Module | None, list[Problem]]:
    """Build the model for the data's `shape` (a benchmark.inputs.DataShape), run one image through it, check the
    checkpoint (if any) against it and what the pruning method (`pruner`, its benchmark.pruning.PRUNERS entry)
    needs of it. Returns (model or None, problems)."""
    key, value = _model_label(model_cfg)
    try:
        model = build_from_config(model_cfg, shape.in_channels, shape.image_size, shape.num_classes)
    except ConfigError:
        raise
    except (ValueError, TypeError) as err:
        return None, [(key, value, f"a model that fits the dataset ({err})")]
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        return model, [(key, value, "an architecture whose logits come from a Linear layer (the classifier head)")]
    try:
        with torch.no_grad():
            out = model.eval()(torch.zeros(1, shape.in_channels, shape.image_size, shape.image_size))
    except Exception as err:  # noqa: BLE001 - any error of the forward pass (your own module's too) is a misfit
        return model, [(key, value, f"a model that runs on {shape.in_channels}x{shape.image_size}x{shape.image_size} "
                                    f"images (forward failed: {str(err).splitlines()[0]})")]
    if not isinstance(out, torch.Tensor) or out.shape != (1, shape.num_classes):
        return model, [(key, value, f"a model whose forward returns (batch, {shape.num_classes}) logits")]
    problems: list[Problem] = []
    if model_cfg.get("checkpoint"):
        from models.checkpoint import mismatch, read_checkpoint

        problem = mismatch(model, read_checkpoint(model_cfg.checkpoint))
        if problem:
            problems.append(("model.checkpoint", model_cfg.checkpoint, f"weights of this architecture: {problem}"))
    method = ("pruning.method", pruner.name)
    if pruner.needs_conv and not any(isinstance(m, nn.Conv2d) for m in model.modules()):
        problems.append((*method, f"a model with a conv layer; {key}={value!r} has none"))
    if pruner.needs_batchnorm and not any(isinstance(m, nn.BatchNorm2d) for m in model.modules()):
        problems.append((*method, f"a model with BatchNorm; {key}={value!r} has none"))
    if pruner.structured:
        head = linears[-1]
        if not any(isinstance(m, (nn.Conv2d, nn.Linear)) and m is not head for m in model.modules()):
            problems.append((*method, f"an unstructured method: {key}={value!r} has no prunable channels besides "
                                      "its classifier head"))
        if _has_attention(model):
            problems.append((*method, f"an unstructured method for {key}={value!r}: structured methods remove conv "
                                      "channels and torch-pruning needs per-model head settings to prune attention "
                                      "layers"))
    problem = pruner.model_check(model) if pruner.model_check else None
    if problem:
        problems.append((*method, f"{problem} ({key}={value!r})"))
    return model, problems
