"""Your own trained weights: `model.checkpoint=<path>` (safetensors, or a torch state dict read with
`weights_only=True`) replaces dense training. The file's sha256, not its path, identifies the model in every key
(`model_identity`). Finding and identifying the file needs no torch (the grid's pre-check hashes every cell before
the heavy imports); reading and loading the weights import it.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from benchmark.inputs import DataError, file_sha256

if TYPE_CHECKING:
    import torch
    import torch.nn as nn

SAFETENSORS_SUFFIXES = (".safetensors",)


def checkpoint_path(checkpoint: str) -> Path:
    path = Path(str(checkpoint)).expanduser().resolve()
    if not path.is_file():
        raise DataError(f"model.checkpoint={str(checkpoint)!r} is not a file; allowed: a .safetensors file or a "
                        "torch state dict (.pt/.pth)")
    return path


def checkpoint_sha256(checkpoint: str) -> str:
    return file_sha256(checkpoint_path(checkpoint))


def model_identity(plain_model: dict) -> dict:
    """The `model` config as cache keys see it: without `checkpoint` when there is none (keys stay those of a
    trained model), with the file's sha256 in place of its path when there is one."""
    identity = {k: v for k, v in plain_model.items() if k != "checkpoint"}
    if plain_model.get("checkpoint"):
        identity["checkpoint_sha256"] = checkpoint_sha256(plain_model["checkpoint"])
    return identity


def read_checkpoint(checkpoint: str) -> dict[str, torch.Tensor]:
    """The state dict in the file, on the CPU. Never unpickles code: safetensors, or torch.load(weights_only=True)."""
    import torch

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
