"""Hydra search-path plugin of dcnn: makes ``sweeps/`` (beside ``conf/``) the group ``sweeps``.

Hydra discovers every module under the ``hydra_plugins`` namespace package, so registering the
path here (instead of appending ``hydra.searchpath=...`` to the command line) lets every Hydra
flag (``-m``, ``--cfg job``, ``--info``) stand anywhere on the line. Other Hydra apps in the same
environment are left alone: the path is added only when dcnn's own ``conf/`` is the primary
config directory. Importing the plugin also registers dcnn's config resolvers
(``dcnn.runs.resolvers``), so that every way of composing dcnn's config knows them.
"""

from __future__ import annotations

from pathlib import Path

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin

from dcnn.paths import CONFIG_DIR, REPO_ROOT
from dcnn.runs import resolvers

resolvers.register()


def _is_dcnn_config_dir(path: str) -> bool:
    # `@hydra.main(config_path=...)` and `initialize_config_dir` give plain file-system paths;
    # `hydra.searchpath` entries carry a scheme.
    path = path.removeprefix("file://")
    return "://" not in path and Path(path).resolve() == CONFIG_DIR


class DcnnSearchPathPlugin(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        if any(_is_dcnn_config_dir(element.path) for element in search_path.get_path()):
            search_path.append(provider="dcnn", path=f"file://{REPO_ROOT}")
