"""The per-image record of an evasion cell (`evasion/per_image.json`), what `make verify` re-attacks and compares.

For the images the cell attacked, in the order it attacked them: their positions in the cell's test split
(`index`), the sha256 of each image's pixels as the pipeline loaded them (float32, C x H x W, C order), the labels,
and per image "1" / "0" flags: right on the clean image, and robust under each attack at each eps (an attack with
its own `subset` has flags for that prefix only). Flags are strings of "0" and "1", one character per image.
"""
from __future__ import annotations

import hashlib

import numpy as np
import torch

PER_IMAGE_ARTIFACT = "evasion/per_image.json"


def image_sha256(x: torch.Tensor) -> list[str]:
    """Per image: the sha256 of its float32 pixels (C x H x W, C order)."""
    pixels = np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy())
    return [hashlib.sha256(image.tobytes()).hexdigest() for image in pixels]


def flags(ok: np.ndarray) -> str:
    return "".join("1" if v else "0" for v in np.asarray(ok, dtype=bool))


def per_image_record(dataset: str, seed: int, index: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
                     clean_ok: np.ndarray, robust: dict[tuple[str, float], np.ndarray]) -> dict:
    """The artifact's content; `robust` maps (attack, eps) to its per-image flags."""
    per_attack: dict[str, dict[str, str]] = {}
    for (name, eps), ok in robust.items():
        per_attack.setdefault(name, {})[f"{eps:g}"] = flags(ok)
    return {"dataset": dataset, "seed": int(seed), "split": "test", "index": [int(i) for i in index],
            "sha256": image_sha256(x), "label": [int(v) for v in y], "clean_correct": flags(clean_ok),
            "robust": per_attack}
