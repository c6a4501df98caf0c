"""Hydra's launcher-plugin API as sesemi's launchers use it (``sesemi.cluster.launcher``).

These live under ``hydra.core`` (not ``hydra._internal``) and are what every Hydra launcher plugin calls (Hydra's
own basic launcher, hydra-submitit-launcher, hydra-joblib-launcher), but Hydra documents no stable launcher API;
they are gathered here so that an upstream move breaks one module (tests/cluster/test_compat_cluster.py uses
each name).

- ``Singleton.get_state/set_state``: a job in another process (a SLURM task) needs the submitting process's
  ConfigStore and plugin registry, exactly as hydra-submitit-launcher ships them.
- ``setup_globals``: registers Hydra's resolvers (``${hydra:...}``, ``${now:...}``) in that process.
- ``run_job``: runs the task function in the job's output dir with Hydra's logging and ``.hydra/`` files.
- ``filter_overrides``: drops ``hydra.*`` overrides when a job's overrides are shown to users.
- ``JobReturn._return_value``: a failed job's exception, to report it without re-raising it.
- ``load_sweep_config``: one sweep job's composed config (through ``HydraContext.config_loader``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext
from omegaconf import DictConfig


def load_sweep_config(hydra_context: HydraContext, master: DictConfig, overrides: Sequence[str]) -> DictConfig:
    """The composed config of one sweep job (the master config plus the job's overrides)."""
    return hydra_context.config_loader.load_sweep_config(master, list(overrides))


def job_error(ret: JobReturn) -> BaseException:
    """The exception of a failed job (``JobReturn._return_value``: the public ``return_value`` re-raises it)."""
    return ret._return_value


def singleton_state() -> dict[type, Any]:
    return Singleton.get_state()


def restore_singletons(state: dict[type, Any]) -> None:
    Singleton.set_state(state)


__all__ = [
    "JobReturn",
    "JobStatus",
    "Launcher",
    "filter_overrides",
    "job_error",
    "load_sweep_config",
    "restore_singletons",
    "run_job",
    "setup_globals",
    "singleton_state",
]
