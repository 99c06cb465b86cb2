"""The config groups of installed PruneSec plugins (benchmark/plugins.py): each `prunesec.configs` entry point's
package is appended to Hydra's search path, after this repository's conf/, so `pruning=<plugin method>` and
`threat=<plugin preset>` compose like built-in options.

Hydra takes search-path plugins from the `hydra_plugins` namespace package only, in every process that composes a
config (a grid's workers too); this module lives here for that reason."""
from __future__ import annotations

from pathlib import Path

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin

BUILTIN_CONF = Path(__file__).resolve().parents[1] / "conf"


class PluginConfigs(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        from benchmark.plugins import config_packages

        for package in config_packages(BUILTIN_CONF):
            search_path.append(provider="prunesec-plugin", path=f"pkg://{package}")
