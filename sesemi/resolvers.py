"""OmegaConf resolvers used by the built-in configs.

- ``${datapath:cifar10}``: a dataset path relative to ``run.data_root`` (absolute paths are kept as they are).
- ``${sesemi.fresh_dir:<run.dir>,<run.id>,<stamp>}``: claims ``<run.dir>/<run.id>/<stamp>`` atomically (``_1``,
  ``_2``... appended when another run got it in the same second), so two runs never share a directory. ``run.id``
  must be one directory name, checked before any directory is made.
- ``${sesemi.run_dir:<run.dir>,<run.id>,<stamp>,${run.resume}}``: as ``fresh_dir``, except that when ``run.resume``
  points into an earlier run it is that run's dir, so the resumed run continues its own checkpoints, TensorBoard
  curves and status file.
- ``${sesemi.output_subdir:${run.resume}}``: ``.hydra``, or none when resuming a run, whose first config stays.
- ``${sesemi.direction:${run.objective_mode}}``: ``max`` -> ``maximize``, ``min`` -> ``minimize`` (an Optuna study's
  direction, for Hydra's own ``hydra/sweeper=optuna``).

Registered by whoever composes the app's config (:func:`register`: the app's entry, ``sesemi.compose``, a launcher's
job side), never as a side effect of an import.
"""

from __future__ import annotations

import functools
import os
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from sesemi import head_configs
from sesemi.compat.omegaconf import register_resolver
from sesemi.errors import ConfigError, exit_with, override
from sesemi.rundir import HYDRA_DIR, find_run_dir


def datapath(path: str, *, _root_: Any) -> str:
    data_root = Path(os.path.expanduser(str(_root_.run.data_root)))
    return str((data_root / os.path.expanduser(path)).absolute())


_claimed: dict[str, Path] = {}


def claim_dir(pattern: str) -> Path:
    """Create ``pattern`` (or ``pattern_1``, ``pattern_2``...) atomically and return it.

    Within one process a pattern is claimed once: Hydra resolves the run and sweep dirs in several config copies
    (e.g. when it builds the launcher), and each must see the same directory.
    """
    if pattern in _claimed:
        return _claimed[pattern]
    base = Path(pattern)
    base.parent.mkdir(parents=True, exist_ok=True)
    for n in range(10_000):
        candidate = base if n == 0 else base.with_name(f"{base.name}_{n}")
        try:
            candidate.mkdir()
            _claimed[pattern] = candidate
            return candidate
        except FileExistsError:
            continue
    raise RuntimeError(f"could not claim a fresh directory for {pattern}")


NAME_MAX = 255  # bytes in one directory name on Linux filesystems (ext4, xfs, NFS, Lustre)


def check_run_id(run_id: Any) -> None:
    """``run.id`` names one directory below ``run.dir``: a single path component, never ``..``, short enough to be
    a directory name."""
    text = str(run_id)
    if not text or text in (".", "..") or "/" in text or "\\" in text or "\0" in text:
        raise ConfigError(
            "run.id",
            f"{text!r} is not a single directory name (runs go to run.dir/run.id/<time>)",
            "use a plain name such as run.id=my_experiment; choose the parent folder with run.dir",
        )
    size = len(os.fsencode(text))
    if size > NAME_MAX:
        shorter = text.encode("utf-8", "surrogateescape")[:64].decode("utf-8", "ignore")
        raise ConfigError(
            "run.id",
            f"is {size} bytes long ({text[:40]}...); a directory name holds at most {NAME_MAX}",
            f"use a shorter name, e.g. {override('run.id', shorter)}",
        )


def _make_dirs(pattern: str) -> Path:
    """``claim_dir(pattern)``, with a folder that cannot be made (read-only, not a folder, no space) as the one
    error line of ``run.dir``."""
    try:
        return claim_dir(pattern)
    except OSError as err:
        blocked = _existing_ancestor(Path(pattern))
        raise ConfigError(
            "run.dir",
            f"cannot make the run dir {pattern}: {err.strerror or err} ({err.filename or blocked})",
            f"choose a folder you can write to, e.g. {override('run.dir', str(Path.home() / 'sesemi' / 'runs'))}, "
            f"or make {blocked} writable: chmod u+w {shlex.quote(str(blocked))}",
        ) from err


def _existing_ancestor(path: Path) -> Path:
    """The deepest folder of ``path`` (or above it) that exists: the one a new sub-folder would be made in."""
    for parent in [path, *path.parents]:
        if parent.exists():
            return parent
    return Path("/")


def run_dir(parent: str, run_id: Any, stamp: str, resume: str | None = None) -> str:
    if resume:
        existing = find_run_dir(resume)
        if existing is not None:
            return str(existing)
    return fresh_dir(parent, run_id, stamp)


def fresh_dir(parent: str, run_id: Any, stamp: str) -> str:
    check_run_id(run_id)
    return str(_make_dirs(f"{parent}/{run_id}/{stamp}"))


def _exit_on_config_error(resolver: Callable[..., str]) -> Callable[..., str]:
    """Hydra resolves the run dir before the task function starts: a bad value there exits with the one error line
    (instead of Hydra's traceback), before any directory is made."""

    @functools.wraps(resolver)
    def resolve(*args: Any) -> str:
        try:
            return resolver(*args)
        except ConfigError as err:
            exit_with(err)

    return resolve


def output_subdir(resume: str | None) -> str | None:
    """``hydra.output_subdir``: ``.hydra`` for a new run; none when resuming one, so its first config stays."""
    return None if resume and find_run_dir(resume) is not None else HYDRA_DIR


def direction(objective_mode: str) -> str:
    return {"max": "maximize", "min": "minimize"}.get(str(objective_mode), str(objective_mode))


def register() -> None:
    """Register what composing sesemi's configs needs (idempotent): the resolvers (the directory ones cached, so that
    every resolution of a config sees one dir) and the loss heads' config nodes (:mod:`sesemi.head_configs`)."""
    head_configs.register()
    if not OmegaConf.has_resolver("datapath"):
        register_resolver("datapath", datapath)
        register_resolver("sesemi.run_dir", _exit_on_config_error(run_dir), use_cache=True)
        register_resolver("sesemi.fresh_dir", _exit_on_config_error(fresh_dir), use_cache=True)
        register_resolver("sesemi.output_subdir", output_subdir)
        register_resolver("sesemi.direction", direction)
