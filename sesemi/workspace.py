"""Hydra plugin (an entry point): a ``configs/`` folder in the launch directory extends sesemi's built-in configs.

Its files are searched first, so a user's ``configs/experiment/mine.yaml`` or ``configs/data/mydata.yaml`` is a new
option of the built-in groups, and ``-cn my_config`` finds ``configs/my_config.yaml``.
"""

from __future__ import annotations

from pathlib import Path

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin


class WorkspaceSearchPath(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        workspace = Path.cwd() / "configs"
        if workspace.is_dir() and any(e.provider == "main" for e in search_path.get_path()):
            search_path.prepend(provider="sesemi-workspace", path=f"file://{workspace}")
