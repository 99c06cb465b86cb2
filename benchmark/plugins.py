"""Plugins from installed packages: a package adds pruning methods, datasets, models and attacks, and their
YAMLs, through Python entry points, without a file of this repository changed (docs/extending.md).

Each registry names its entry-point group (`prunesec.pruning`, `prunesec.datasets`, `prunesec.models`,
`prunesec.evasion_attacks`, `prunesec.poisoning_attacks`, `prunesec.backdoor_attacks`); an entry point of the
group names a module that registers its entries, when imported, with the same decorator a built-in module uses.
The registry imports those modules right after its built-in ones, the first time it is asked for a name, in
every process that asks (a grid's workers too). An entry point of `prunesec.configs` names the package that holds
a plugin's config groups (`pruning/`, `threat/`, ...): hydra_plugins/prunesec_plugin_configs.py appends it to
Hydra's search path, after this repository's conf/; a plugin adds options and never replaces one.

A plugin that cannot be imported, or that registers a name or ships a YAML already taken, is a `PluginError`: one
line naming the plugin, rejected (exit code 2) before any compute. This module imports nothing heavy.
"""
from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass
from importlib import resources
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path

from benchmark.checks import ConfigError

CONFIGS_GROUP = "prunesec.configs"


class PluginError(ConfigError):
    """An installed plugin that cannot be used: one line naming it and the cause."""


@dataclass(frozen=True)
class Plugin:
    """One entry point of an installed package. Its name is the name its module registers (one entry point per
    registered name, several may name one module), so the package that provides a name is known without
    importing anything: the cache keys of a cell that uses it hold the package's version."""
    name: str
    group: str
    module: str
    package: str  # the installed distribution's name, e.g. "prunesec-extras"
    version: str

    def __str__(self) -> str:
        return f"plugin {self.name!r} ({self.group} = {self.module}, from {self.package} {self.version})"


def _plugin(entry_point: EntryPoint) -> Plugin:
    dist = entry_point.dist
    package, version = (dist.name, dist.version) if dist is not None else ("an unnamed package", "unknown")
    return Plugin(entry_point.name, entry_point.group, entry_point.value, package, version)


@functools.lru_cache(maxsize=None)
def installed(group: str) -> tuple[tuple[Plugin, EntryPoint], ...]:
    """The entry points of `group` in every installed package, in a stable order (read once per process)."""
    found = sorted(entry_points(group=group), key=lambda ep: (ep.name, ep.value))
    return tuple((_plugin(ep), ep) for ep in found)


def listed(group: str | None, name: str) -> Plugin | None:
    """The entry point of `group` named `name`, if an installed package lists one."""
    return next((plugin for plugin, _ in installed(group) if plugin.name == name), None) if group else None


_loading: list[Plugin] = []  # the plugin whose module is being imported now (innermost last)


def loading() -> Plugin | None:
    """The plugin whose module is being imported now, None while built-in code registers."""
    return _loading[-1] if _loading else None


@contextlib.contextmanager
def _importing(plugin: Plugin):
    _loading.append(plugin)
    try:
        yield
    finally:
        _loading.pop()


def load(group: str) -> list[Plugin]:
    """Import the module of every entry point of `group`; a module that raises is a PluginError naming it."""
    for plugin, entry_point in installed(group):
        with _importing(plugin):
            try:
                entry_point.load()
            except PluginError:
                raise
            except Exception as err:  # noqa: BLE001 - any failure of a plugin's import is the plugin's
                first = (str(err).strip().splitlines() or [""])[0]
                raise PluginError(f"{plugin} cannot be imported: {type(err).__name__}: {first}; allowed: a plugin "
                                  "whose module imports (fix or uninstall its package)") from None
    return [plugin for plugin, _ in installed(group)]


def versions(used: list[tuple[str, str]]) -> dict[str, str]:
    """{package: version} of the installed packages that provide the (entry-point group, name) pairs a cell uses;
    empty for a cell of built-in entries only (a plugin never takes a built-in's name)."""
    found = (listed(group, name) for group, name in used)
    return {plugin.package: plugin.version for plugin in found if plugin is not None}


def _yaml_files(folder) -> set[str]:
    """`group/option.yaml` of every YAML one level or more below `folder` (a path or an importlib resource)."""
    found, pending = set(), [(folder, "")]
    while pending:
        here, prefix = pending.pop()
        for item in here.iterdir():
            if item.is_dir():
                pending.append((item, f"{prefix}{item.name}/"))
            elif prefix and item.name.endswith(".yaml"):
                found.add(f"{prefix}{item.name}")
    return found


def config_packages(builtin_conf: Path) -> list[str]:
    """The package of every plugin's config groups (a `prunesec.configs` entry point's value), checked: importable,
    a package (Hydra reads `pkg://` sources with an `__init__.py` only), and no YAML that `builtin_conf` or an
    earlier plugin already has (Hydra would take the first and ignore the other without a word)."""
    taken = dict.fromkeys(_yaml_files(builtin_conf), "this repository's conf/")
    packages = []
    for plugin, entry_point in installed(CONFIGS_GROUP):
        try:
            folder = resources.files(entry_point.value)
            is_package = folder.joinpath("__init__.py").is_file()
        except Exception as err:  # noqa: BLE001 - any failure to import the package is the plugin's
            first = (str(err).strip().splitlines() or [""])[0]
            raise PluginError(f"{plugin}: its config package cannot be imported: {type(err).__name__}: {first}; "
                              "allowed: an installed package holding the config groups") from None
        if not is_package:
            raise PluginError(f"{plugin}: {entry_point.value} has no __init__.py; allowed: a package (Hydra reads "
                              "configs from packages only)")
        for relative in sorted(_yaml_files(folder)):
            if relative in taken:
                raise PluginError(f"{plugin} ships {relative}, which {taken[relative]} has too; allowed: an option "
                                  "name no built-in or other plugin uses")
            taken[relative] = str(plugin)
        packages.append(entry_point.value)
    return packages
