"""Registries that plugins fill by decorating themselves: pruning methods, models, datasets, threats.

A plugin module declares `@REGISTRY.register(name, config=Model, **metadata)` next to its code; the registry
imports every module of its package the first time it is asked for a name (`discover`), so adding a plugin
is adding a file, and then the modules that installed packages list under its entry-point group
(benchmark/plugins.py).
Metadata keys are declared by the registry with their defaults, so a misspelt key fails at import instead of
being ignored. A name belongs to one module: a second module registering it is an error, and a plugin's
(`PluginError`, rejected like a config mistake) when either of the two comes from an installed package.
"""
from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from typing import Any, Callable

from benchmark import plugins
from benchmark.plugins import Plugin, PluginError


@dataclass(frozen=True)
class Entry:
    name: str
    target: Any  # what the plugin registered: a function or a class
    config: type | None  # its config group's pydantic model (benchmark.checks.Group), if it declares one
    meta: dict[str, Any] = field(default_factory=dict)
    plugin: Plugin | None = None  # the installed package's entry point that registered it; None: built in

    def __getattr__(self, key: str):
        try:
            return self.meta[key]
        except KeyError:
            raise AttributeError(key) from None


class Registry:
    def __init__(self, key: str, package: str, metadata: dict[str, Any] | None = None,
                 plugins: str | None = None):
        self.key = key  # the config key that names an entry, e.g. "pruning.method"
        self.package = package  # whose modules are discovered
        self.plugins = plugins  # the entry-point group that lists installed packages' modules, if any
        self.metadata = dict(metadata or {})  # allowed metadata keys and their defaults
        self._entries: dict[str, Entry] = {}
        self._discovered = False

    def register(self, name: str, *, config: type | None = None, **meta) -> Callable:
        unknown = set(meta) - set(self.metadata)
        if unknown:
            raise TypeError(f"{self.key} {name!r}: unknown metadata {sorted(unknown)}; allowed: {sorted(self.metadata)}")

        def decorate(target):
            plugin = plugins.loading()
            if plugin is not None and target.__module__.split(".")[0] != plugin.module.split(".")[0]:
                plugin = None  # a built-in module that the plugin's import imported first
            existing = self._entries.get(name)
            if existing is not None and (existing.plugin or plugin) and existing.plugin != plugin:
                blamed, other = ((plugin, existing.target.__module__) if plugin
                                 else (existing.plugin, target.__module__))
                raise PluginError(f"{blamed} registers {self.key}={name!r}, which {other} registers too; allowed: a "
                                  "name no built-in or other plugin uses")
            if plugin is not None and not self._lists(plugin, name):
                raise PluginError(f"{plugin} registers {self.key}={name!r}, which its package lists under no entry "
                                  f"point {name!r} of {self.plugins or 'any group'}; allowed: one entry point per "
                                  "registered name, named after it, in the registry's group")
            if existing is not None and existing.target.__qualname__ != target.__qualname__:
                raise ValueError(f"{self.key}={name!r} is registered twice ({existing.target.__module__} and "
                                 f"{target.__module__})")
            self._entries[name] = Entry(name, target, config, {**self.metadata, **meta}, plugin)
            return target

        return decorate

    def unregister(self, name: str) -> None:
        """Remove an entry (a test's temporary plugin)."""
        self._entries.pop(name, None)

    def discover(self) -> "Registry":
        """Import every module of the package once (modules whose name starts with `_` are not plugins), then the
        installed packages' modules listed under the registry's entry-point group."""
        if not self._discovered:
            self._discovered = True
            package = importlib.import_module(self.package)
            for module in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
                if not module.name.startswith("_"):
                    importlib.import_module(f"{self.package}.{module.name}")
            try:
                self._load_plugins()
            except PluginError:
                self._discovered = False  # asked again, the registry says the same instead of going on without it
                raise
        return self

    def _load_plugins(self) -> None:
        for plugin in plugins.load(self.plugins) if self.plugins else ():
            entry = self._entries.get(plugin.name)
            if entry is None or entry.plugin is None or entry.plugin.package != plugin.package:
                raise PluginError(f"{plugin} registers no {self.key}={plugin.name!r}; allowed: an entry point "
                                  "named after what its module registers")

    def _lists(self, plugin: Plugin, name: str) -> bool:
        """Whether the package of `plugin` lists `name` under this registry's group (its version keys the name)."""
        entry_point = plugins.listed(self.plugins, name)
        return entry_point is not None and entry_point.package == plugin.package

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
