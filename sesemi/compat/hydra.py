"""Hydra APIs that sesemi uses but Hydra does not document as stable, and why (one module, so an upstream move breaks
here; ``tests/sweep/test_compat_sweep.py`` and ``tests/cluster/test_compat_cluster.py`` use each name).

Sweeper (``sesemi.sweep``; checked against Hydra 1.4 and hydra-optuna-sweeper 1.4):

- The search-space grammar (``interval(..)``, ``tag(log, ..)``, ``choice(..)``, ``range(..)``) is turned into
  Optuna distributions exactly as Hydra's own Optuna sweeper does, by its own functions, so that a search space
  means the same under ``hydra/sweeper=optuna`` and sesemi's sweepers; the plugin exports no public API.
- A failed job's exception: ``JobReturn.return_value`` re-raises it; sweepers and launchers only want to record it.

Launchers (``sesemi.cluster.launcher``). These live under ``hydra.core`` (not ``hydra._internal``) and are what every
Hydra launcher plugin calls (Hydra's basic launcher, hydra-submitit-launcher, hydra-joblib-launcher):

- ``Singleton.get_state/set_state``: a job in another process (a SLURM task) needs the submitting process's
  ConfigStore and plugin registry, exactly as hydra-submitit-launcher ships them.
- ``setup_globals``: registers Hydra's resolvers (``${hydra:...}``, ``${now:...}``) in that process.
- ``run_job``: runs the task function in the job's output dir with Hydra's logging and ``.hydra/`` files.
- ``filter_overrides``: drops ``hydra.*`` overrides when a job's overrides are shown to users.
- ``load_sweep_config``: one sweep job's composed config (through ``HydraContext.config_loader``).

Code snapshots (``sesemi.cluster.snapshot``):

- ``repoint_search_path``: a job composes its config with the config loader pickled at submission, whose search path
  names the live workspace ``configs/``; the job must compose from the snapshot's copy. ``ConfigLoaderImpl`` builds
  its config sources once, from its search path, when it is created (``ConfigLoaderImpl.repository``, not part of
  the ``ConfigLoader`` interface; ``ConfigSearchPath.append/prepend`` say they take effect only before that), so the
  path is changed and the sources built again.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext
from omegaconf import DictConfig

if TYPE_CHECKING:  # optuna is the sweep extra; the launchers import this module without it
    from optuna.distributions import BaseDistribution


def search_space(arguments: list[str]) -> tuple[dict[str, BaseDistribution], dict[str, Any], list[str]]:
    """Sweep overrides -> (distributions, fixed parameters, other overrides), as hydra/sweeper=optuna reads them."""
    from hydra_plugins.hydra_optuna_sweeper._impl import create_params_from_overrides

    return create_params_from_overrides(arguments)


def grid_choices(distribution: BaseDistribution) -> list[Any]:
    """The grid points of a discrete distribution, as Hydra's Optuna sweeper hands them to ``GridSampler``."""
    from hydra_plugins.hydra_optuna_sweeper._impl import OptunaSweeperImpl

    return list(OptunaSweeperImpl._to_grid_sampler_choices(distribution))


def job_error(ret: JobReturn) -> BaseException | None:
    """The exception of a failed job (``JobReturn._return_value``), without raising it; None if it did not fail."""
    return ret._return_value if ret.status == JobStatus.FAILED else None


def load_sweep_config(hydra_context: HydraContext, master: DictConfig, overrides: Sequence[str]) -> DictConfig:
    """The composed config of one sweep job (the master config plus the job's overrides)."""
    return hydra_context.config_loader.load_sweep_config(master, list(overrides))


def repoint_search_path(config_loader: Any, old: str, new: str) -> bool:
    """Make a config loader's search path entries that are ``old`` (e.g. ``file:///ws/configs``) ``new``, and its
    config sources follow; False when no entry is ``old`` (nothing changed)."""
    search_path = config_loader.get_search_path()
    entries = [e for e in search_path.get_path() if e.path == old]
    for entry in entries:
        entry.path = new
    if entries:
        config_loader.repository.initialize_sources(search_path)
    return bool(entries)


def singleton_state() -> dict[type, Any]:
    return Singleton.get_state()


def restore_singletons(state: dict[type, Any]) -> None:
    Singleton.set_state(state)


__all__ = [
    "JobReturn",
    "JobStatus",
    "Launcher",
    "filter_overrides",
    "grid_choices",
    "job_error",
    "load_sweep_config",
    "repoint_search_path",
    "restore_singletons",
    "run_job",
    "search_space",
    "setup_globals",
    "singleton_state",
]
