"""What a `_target_` import path (`pkg.module.Class`) names, for cache keys, read without importing the module: the
source file's sha256, or the installed distribution's name and version when the module comes from site-packages
(an installed package is identified by its version, which covers every file of it). Importing the module's parent
packages cannot be avoided (Python finds a submodule through its parent); the module itself is not executed.
"""
from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import importlib.util
import sysconfig
from pathlib import Path

from benchmark.checks import ConfigError


def module_file(target: str, key: str = "model._target_") -> tuple[str, Path]:
    """(module name, its source file) of the longest dotted prefix of `target` that is a module with a file."""
    parts = target.split(".")
    for end in range(len(parts) - 1, 0, -1):
        name = ".".join(parts[:end])
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            continue
        if spec is not None and spec.origin and spec.origin not in ("built-in", "frozen") and spec.has_location:
            return name, Path(spec.origin)
    raise ConfigError(f"{key}={target!r} names no importable module with a source file; allowed: the import path "
                      "of a class or function, pkg.module.Name, importable here (on sys.path or installed)")


def _installed_roots() -> list[Path]:
    paths = sysconfig.get_paths()
    return [Path(paths[k]).resolve() for k in ("purelib", "platlib")]


@functools.lru_cache(maxsize=256)
def _file_sha256(path: Path, stamp: tuple) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def source_identity(target: str, key: str = "model._target_") -> dict:
    """{"distribution": name, "version": v} for an installed package's module, else {"source_sha256": ...} of the
    module's file."""
    module, path = module_file(target, key)
    path = path.resolve()
    if any(path.is_relative_to(root) for root in _installed_roots()):
        top = module.split(".")[0]
        distributions = importlib.metadata.packages_distributions().get(top)
        if distributions:
            name = sorted(distributions)[0]
            return {"distribution": name, "version": importlib.metadata.version(name)}
    stat = path.stat()
    return {"source_sha256": _file_sha256(path, (stat.st_size, stat.st_mtime_ns))}
