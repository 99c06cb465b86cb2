"""Content-addressed model cache: `<root>/<kind>/<key>.safetensors` plus a JSON sidecar with its sha256.

Writes are atomic (temp file + rename), so two workers computing the same artifact cannot leave a torn file;
loads verify the hash, and a corrupted or partial entry is reported, deleted and rebuilt by the caller.
Weights are stored with safetensors: loading never unpickles anything.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

log = logging.getLogger(__name__)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


class ModelCache:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def _paths(self, kind: str, key: str) -> tuple[Path, Path]:
        base = self.root / kind / key
        return base.with_suffix(".safetensors"), base.with_suffix(".json")

    def save(self, kind: str, key: str, state_dict: dict[str, torch.Tensor], meta: dict) -> Path:
        weights, sidecar = self._paths(kind, key)
        tensors = {k: v.detach().cpu().contiguous().clone() for k, v in state_dict.items()}
        _atomic_write(weights, lambda tmp: save_file(tensors, tmp))
        record = {"sha256": _sha256(weights), "meta": meta}
        _atomic_write(sidecar, lambda tmp: Path(tmp).write_text(json.dumps(record, indent=1, default=str)))
        return weights

    def load(self, kind: str, key: str) -> tuple[dict[str, torch.Tensor], dict] | None:
        """(state_dict, meta), or None when absent or corrupted (a corrupted entry is deleted)."""
        weights, sidecar = self._paths(kind, key)
        if not (weights.exists() and sidecar.exists()):
            return None
        try:
            record = json.loads(sidecar.read_text())
            if _sha256(weights) != record["sha256"]:
                raise ValueError("sha256 mismatch")
            return load_file(str(weights)), record["meta"]
        except Exception as err:  # any unreadable entry is rebuilt rather than trusted
            log.warning("cache entry %s/%s is corrupted (%s): deleting it and rebuilding", kind, key, err)
            for p in (weights, sidecar):
                p.unlink(missing_ok=True)
            return None
