"""Your own trained weights: `model.checkpoint=<path>` (safetensors, or a torch state dict read with
`weights_only=True`) replaces dense training. The file's sha256, not its path, identifies the model in every key
(benchmark.inputs.model_identity)."""
from __future__ import annotations

import torch
import torch.nn as nn

from benchmark.inputs import DataError, checkpoint_path

SAFETENSORS_SUFFIXES = (".safetensors",)


def read_checkpoint(checkpoint: str) -> dict[str, torch.Tensor]:
    """The state dict in the file, on the CPU. Never unpickles code: safetensors, or torch.load(weights_only=True)."""
    path = checkpoint_path(checkpoint)
    try:
        if path.suffix in SAFETENSORS_SUFFIXES:
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file gets the same one-line answer
        raise DataError(f"model.checkpoint={str(checkpoint)!r} cannot be read as safetensors or a torch state dict "
                         f"(weights_only=True): {type(err).__name__}: {str(err).splitlines()[0]}") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]  # the usual {"state_dict": ..., "epoch": ...} training checkpoint
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise DataError(f"model.checkpoint={str(checkpoint)!r} does not hold a state dict (names -> tensors)")
    return state


def mismatch(model: nn.Module, state: dict[str, torch.Tensor]) -> str | None:
    """What keeps `state` from loading into `model` (missing / unexpected keys, shape mismatches), or None."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
              for k in sorted(set(expected) & set(state)) if state[k].shape != expected[k].shape]
    parts = [f"{label} ({len(items)}): {', '.join(items[:12])}{' ...' if len(items) > 12 else ''}"
             for label, items in (("missing keys", missing), ("unexpected keys", unexpected),
                                  ("shape mismatches", shapes)) if items]
    return "; ".join(parts) or None


def load_checkpoint_into(model: nn.Module, checkpoint: str) -> nn.Module:
    state = read_checkpoint(checkpoint)
    problem = mismatch(model, state)
    if problem:
        raise ValueError(f"model.checkpoint={str(checkpoint)!r} does not fit the model: {problem}")
    model.load_state_dict(state)
    return model
