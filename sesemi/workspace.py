"""A user's workspace (``data/ runs/ configs/ src/``): its ``configs/`` extend the built-in configs, its ``src/``
holds the code that ``_target_`` paths name.

:class:`WorkspaceSearchPath` is a Hydra plugin (an entry point): a ``configs/`` folder in the launch directory is
searched first, so a user's ``configs/experiment/mine.yaml`` or ``configs/data/mydata.yaml`` is a new option of the
built-in groups, and ``-cn my_config`` finds ``configs/my_config.yaml``. :func:`add_src_dir` makes ``src/``
importable for training and inference alike (light: inference commands need no training imports).
"""

from __future__ import annotations

import sys
from pathlib import Path

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin


class WorkspaceSearchPath(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        workspace = Path.cwd() / "configs"
        if workspace.is_dir() and any(e.provider == "main" for e in search_path.get_path()):
            search_path.prepend(provider="sesemi-workspace", path=f"file://{workspace}")


def add_src_dir(src_dir: str | None) -> None:
    """Make the user's ``src/`` packages importable for ``_target_`` (no setup.py needed)."""
    if not src_dir:
        return
    path = Path(src_dir).absolute()
    if path.is_dir() and str(path) not in sys.path:
        sys.path.insert(0, str(path))
