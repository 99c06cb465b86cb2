"""Registries that plugins fill by decorating themselves: pruning methods, models, datasets, threats.

A plugin module declares `@REGISTRY.register(name, config=Model, **metadata)` next to its code; the registry
imports every module of its package the first time it is asked for a name (`discover`), so adding a plugin
is adding a file. Metadata keys are declared by the registry with their defaults, so a misspelt key fails at
import instead of being ignored.
"""
from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass(frozen=True)
class Entry:
    name: str
    target: Any  # what the plugin registered: a function or a class
    config: type | None  # its config group's pydantic model (benchmark.checks.Group), if it declares one
    meta: dict[str, Any] = field(default_factory=dict)

    def __getattr__(self, key: str):
        try:
            return self.meta[key]
        except KeyError:
            raise AttributeError(key) from None


class Registry:
    def __init__(self, key: str, package: str, metadata: dict[str, Any] | None = None):
        self.key = key  # the config key that names an entry, e.g. "pruning.method"
        self.package = package  # whose modules are discovered
        self.metadata = dict(metadata or {})  # allowed metadata keys and their defaults
        self._entries: dict[str, Entry] = {}
        self._discovered = False

    def register(self, name: str, *, config: type | None = None, **meta) -> Callable:
        unknown = set(meta) - set(self.metadata)
        if unknown:
            raise TypeError(f"{self.key} {name!r}: unknown metadata {sorted(unknown)}; allowed: {sorted(self.metadata)}")

        def decorate(target):
            existing = self._entries.get(name)
            if existing is not None and existing.target.__qualname__ != target.__qualname__:
                raise ValueError(f"{self.key}={name!r} is registered twice ({existing.target.__module__} and "
                                 f"{target.__module__})")
            self._entries[name] = Entry(name, target, config, {**self.metadata, **meta})
            return target

        return decorate

    def unregister(self, name: str) -> None:
        """Remove an entry (a test's temporary plugin)."""
        self._entries.pop(name, None)

    def discover(self) -> "Registry":
        """Import every module of the package once (modules whose name starts with `_` are not plugins)."""
        if not self._discovered:
            self._discovered = True
            package = importlib.import_module(self.package)
            for module in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
                if not module.name.startswith("_"):
                    importlib.import_module(f"{self.package}.{module.name}")
        return self

    def names(self) -> list[str]:
        return sorted(self.discover()._entries)

    def entries(self) -> list[Entry]:
        return [self._entries[name] for name in self.names()]

    def __iter__(self):
        return iter(self.names())

    def __contains__(self, name: str) -> bool:
        return name in self.discover()._entries

    def __getitem__(self, name: str) -> Entry:
        if name not in self:
            raise KeyError(f"{self.key}={name!r} is unknown; allowed: {self.names()}")
        return self._entries[name]
