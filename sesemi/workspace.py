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

# The primary config module of sesemi's apps (train, predict, pseudo_label: `@hydra.main(config_path=...)`, and
# `initialize_config_module("sesemi.configs")` for composing them): how a search path says it belongs to one.
SESEMI_CONFIGS = "pkg://sesemi.configs"
PROVIDER = "sesemi-workspace"


class WorkspaceSearchPath(SearchPathPlugin):
    """Puts ``./configs`` first in the search path of sesemi's apps, and of no other Hydra app.

    Hydra runs every installed search-path plugin for every app in the environment, so this one acts only when the
    app's own (``main``) config path is sesemi's: another app launched from a folder with a ``configs/`` of its own
    keeps reading its own configs. Idempotent, for Hydra versions that find it twice (scan and entry point).
    """

    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        workspace = Path.cwd() / "configs"
        if workspace.is_dir() and is_sesemi_app(search_path) and not _has_workspace(search_path):
            check_yaml(workspace)
            search_path.prepend(provider=PROVIDER, path=f"file://{workspace}")


def check_yaml(configs: Path) -> None:
    """A YAML syntax error in a file of the workspace's ``configs/`` is the app's one error line naming the file and
    the line (exit status 2), before Hydra reads anything: Hydra's own report of it is a 60-line traceback. Only the
    syntax is checked (``yaml.compose``: no value is built), so nothing Hydra reads is refused here."""
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    for path in sorted(configs.rglob("*.yaml")):
        try:
            yaml.compose(path.read_text(), Loader=loader)
        except yaml.MarkedYAMLError as err:
            mark = err.problem_mark or err.context_mark
            shown = path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path
            where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "somewhere"
            problem = err.problem or "not YAML"
            context = err.context and err.context_mark and f" ({err.context} at line {err.context_mark.line + 1})"
            # sesemi.errors' one-line format (the base layer imports nothing of sesemi).
            print(
                f"sesemi: error: {shown}: {where}: YAML syntax: {problem}{context or ''}. Fix: correct the YAML at "
                f"{shown}:{mark.line + 1 if mark else 1} (a file of your workspace's configs/, read before sesemi's "
                "own configs)",
                file=sys.stderr,
                flush=True,
            )
            raise SystemExit(2) from None


def is_sesemi_app(search_path: ConfigSearchPath) -> bool:
    return any(e.provider == "main" and (e.path or "").rstrip("/") == SESEMI_CONFIGS for e in search_path.get_path())


def _has_workspace(search_path: ConfigSearchPath) -> bool:
    return any(e.provider == PROVIDER for e in search_path.get_path())


def add_src_dir(src_dir: str | None) -> None:
    """Make the user's ``src/`` packages importable for ``_target_`` (no setup.py needed)."""
    if not src_dir:
        return
    path = Path(src_dir).absolute()
    if path.is_dir() and str(path) not in sys.path:
        sys.path.insert(0, str(path))
