"""What every sesemi logger shares: the run's config as flat hyperparameters, the logger run a run dir keeps
(``loggers.json``: MLflow's and W&B's run ids, so that a restart continues the same run), a run's name."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from sesemi.atomic import write_json
from sesemi.errors import ConfigError
from sesemi.rundir import LOGGERS_FILE

Scalar = bool | int | float | str


def _scalar(value: Any) -> Scalar:
    """A config value as a hyperparameter every logger takes: numbers, bools and strings as they are, None as
    ``null``, lists (and anything else) as their JSON text, e.g. ``["val/acc", "train/loss"]``."""
    if isinstance(value, (bool, int, float, str)):
        return value
    return json.dumps(value, default=str)


def flat_config(config: Mapping[str, Any], prefix: str = "") -> dict[str, Scalar]:
    """``{"optimizer": {"lr": 0.03}}`` as ``{"optimizer.lr": 0.03}``: the keys a Hydra command line overrides."""
    flat: dict[str, Scalar] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flat_config(value, f"{name}."))
        else:
            flat[name] = _scalar(value)
    return flat


def require(package: str, key: str) -> None:
    if find_spec(package) is None:
        raise ConfigError(
            key, f"needs the {package} package, which is not installed", f"pip install 'sesemi[{package}]'"
        )


def _logger_runs(run_dir: str | os.PathLike) -> dict[str, Any]:
    try:
        return json.loads((Path(run_dir) / LOGGERS_FILE).read_text())
    except (OSError, ValueError):
        return {}


def kept_run(run_dir: str | os.PathLike, logger: str) -> dict[str, Any]:
    """What :func:`keep_run` stored for ``logger`` in the run dir (empty: this run dir has no such logger run yet)."""
    return _logger_runs(run_dir).get(logger) or {}


def keep_run(run_dir: str | os.PathLike, logger: str, run: Mapping[str, Any]) -> None:
    """Store the id (and where it lives) of ``logger``'s run in the run dir (written atomically), for the restarts
    of the run."""
    runs = _logger_runs(run_dir)
    runs[logger] = dict(run)
    write_json(Path(run_dir) / LOGGERS_FILE, runs)


def run_name(run_dir: str | os.PathLike, parent_dir: str | os.PathLike) -> str:
    """A run's name in MLflow and W&B: its run dir below ``parent_dir`` (``${run.dir}/${run.id}``), i.e.
    ``<timestamp>``, ``<timestamp>/<job>`` or ``<sweep>/trial_0003``; the run dir's own name when it is elsewhere."""
    run_dir, parent = Path(run_dir).absolute(), Path(parent_dir).absolute()
    return run_dir.relative_to(parent).as_posix() if run_dir.is_relative_to(parent) else run_dir.name
