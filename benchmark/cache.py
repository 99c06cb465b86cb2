"""Content-addressed cache: one file per entry. A model is `<root>/<kind>/<key>.safetensors`, whose header holds
the entry's metadata and the sha256 of its tensors; a record (a model's evaluation, benchmark/evaluation.py) is
`<root>/<kind>/<key>.json`, its first line the sha256 of the JSON text that follows.

One file, written atomically (temp file + rename): two workers computing the same artifact cannot leave a torn
file, and a reader can never pair one writer's weights with another's checksum (a weights file plus a sidecar
could: a reader could delete a file a writer is about to hash). Loads verify the hash; a corrupted or partial
entry is reported, deleted and rebuilt by the caller. safetensors: loading never unpickles anything.

Loads read the file's bytes once and parse those: safetensors' own `safe_open(..., framework="pt")` reads the
header from one open of the path and maps the tensors with `torch.UntypedStorage.from_file(path)`, a second open
by name, so a writer renaming a fresh entry in between could pair one writer's header with another's tensors.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import struct
import tempfile
from pathlib import Path

import numpy as np
import torch
from filelock import FileLock
from safetensors.torch import load as load_tensors
from safetensors.torch import save_file

log = logging.getLogger(__name__)


def tensors_sha256(tensors: dict[str, torch.Tensor]) -> str:
    """Hash of names, dtypes, shapes and bytes, in name order: what the entry must reproduce on load."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def atomic_write(path: Path, write) -> None:
    """`write(tmp)` into a temporary file beside `path`, then renamed onto it: `path` is whole or absent."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _metadata(data: bytes) -> dict[str, str]:
    """The `__metadata__` of a safetensors file's bytes (format: u64 little-endian header length, JSON header)."""
    (length,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8:8 + length]).get("__metadata__") or {}


def _plain(value):
    """A numpy scalar or a one-element tensor as the Python number it holds (json cannot write them)."""
    if isinstance(value, np.generic) or (isinstance(value, torch.Tensor) and value.numel() == 1):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON-able")


class ModelCache:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def record_path(self, kind: str, key: str) -> Path:
        return self.root / kind / f"{key}.json"

    def save_record(self, kind: str, key: str, record: dict) -> Path:
        """`record` (JSON-able; NaN and infinities kept) as one file, written atomically."""
        path = self.record_path(kind, key)
        text = json.dumps(record, default=_plain)
        digest = hashlib.sha256(text.encode()).hexdigest()
        atomic_write(path, lambda tmp: Path(tmp).write_text(f"{digest}\n{text}"))
        return path

    def load_record(self, kind: str, key: str) -> dict | None:
        """The record, or None when absent or corrupted (a corrupted entry is deleted)."""
        path = self.record_path(kind, key)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        digest, _, text = data.partition(b"\n")
        if hashlib.sha256(text).hexdigest().encode() == digest:
            try:
                return json.loads(text)
            except ValueError:
                pass
        log.warning("cache entry %s/%s is corrupted: deleting it and recomputing", kind, key)
        path.unlink(missing_ok=True)
        return None

    def path(self, kind: str, key: str) -> Path:
        return self.root / kind / f"{key}.safetensors"

    def lock(self, kind: str, key: str) -> FileLock:
        """An inter-process lock for computing one entry (the OS releases it if the holder dies)."""
        (self.root / "locks").mkdir(parents=True, exist_ok=True)
        return FileLock(self.root / "locks" / f"{kind}-{key}.lock")

    def save(self, kind: str, key: str, state_dict: dict[str, torch.Tensor], meta: dict) -> Path:
        path = self.path(kind, key)
        tensors = {k: v.detach().cpu().contiguous().clone() for k, v in state_dict.items()}
        header = {"sha256": tensors_sha256(tensors), "meta": json.dumps(meta, default=str)}
        atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=header))
        return path

    def load(self, kind: str, key: str) -> tuple[dict[str, torch.Tensor], dict] | None:
        """(state_dict, meta), or None when absent or corrupted (a corrupted entry is deleted)."""
        path = self.path(kind, key)
        try:
            with open(path, "rb") as f:  # one open: header and tensors come from the same file
                inode = os.fstat(f.fileno()).st_ino
                data = f.read()
        except FileNotFoundError:
            return None
        try:
            header = _metadata(data)
            tensors = load_tensors(data)
            if tensors_sha256(tensors) != header.get("sha256"):
                raise ValueError("sha256 mismatch")
            return tensors, json.loads(header["meta"])
        except Exception as err:  # any unreadable entry is rebuilt rather than trusted
            log.warning("cache entry %s/%s is corrupted (%s): deleting it and rebuilding", kind, key, err)
            try:
                if path.stat().st_ino == inode:  # not a fresh entry another worker renamed in meanwhile
                    path.unlink()
            except FileNotFoundError:
                pass
            return None
