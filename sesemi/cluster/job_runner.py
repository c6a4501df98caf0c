"""Runs one Hydra job from its overrides: what every sesemi launcher and sweep worker does where a job runs.

A job is the sweep's (master) config, the job's overrides, its number and id, and the task function (the training
app's, or a sweep's wrapper of it). :func:`run` composes the job's config (``load_sweep_config``), sets
``hydra.job.num``/``id``, and runs the task in the job's output dir through Hydra's ``run_job`` (its ``.hydra/``
files, its log file, ``HydraConfig``), returning Hydra's ``JobReturn``. A job shipped to another process (a
submitit job, a SLURM task) also carries the submitting process's Hydra singletons (the ConfigStore with sesemi's
launcher schemas, the plugin registry), which are restored first, as hydra-submitit-launcher does.

Used by the launchers' job side (:mod:`sesemi.cluster.launcher`) and by an asynchronous sweep's worker for each of
its trials (:mod:`sesemi.sweep.worker`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, open_dict

from sesemi import resolvers
from sesemi.cluster import snapshot
from sesemi.compat import hydra as hydra_compat


@dataclass
class HydraJob:
    hydra_context: Any
    config: DictConfig  # the sweep's master config
    task_function: Callable[[DictConfig], Any]
    overrides: list[str]
    num: int
    job_id: str
    singletons: dict[type, Any] | None = None  # set when the job runs in another process than the sweep's

    def compose(self) -> DictConfig:
        """The job's own config: the master config with the job's overrides, its number and id set."""
        config = hydra_compat.load_sweep_config(self.hydra_context, self.config, self.overrides)
        with open_dict(config):
            config.hydra.job.id = self.job_id
            config.hydra.job.num = self.num
        snapshot.pin_src_dir(config)  # a job started on a code snapshot imports the user's code from it
        return config


def run(job: HydraJob, *, rank: int = 0, keep_logging: bool = False, config: DictConfig | None = None) -> Any:
    """Run ``job`` in this process; returns Hydra's ``JobReturn`` (a failed task is in it, not raised).

    ``rank`` > 0: a non-zero rank of a multi-process job, which leaves ``.hydra/`` and the log file to rank 0.
    ``keep_logging``: restore this process's logging afterwards (a worker that runs job after job keeps its own
    log file, instead of writing on into its last trial's). ``config``: the job's config, if it was composed
    already (by :meth:`HydraJob.compose`).
    """
    if job.singletons is not None:
        hydra_compat.restore_singletons(job.singletons)
        snapshot.enter(job.hydra_context.config_loader)  # after the restore: it repoints the config search path
    hydra_compat.setup_globals()
    resolvers.register()
    config = job.compose() if config is None else config
    if rank > 0:
        with open_dict(config.hydra):
            config.hydra.output_subdir = None  # .hydra/ is rank 0's
    with _logging_kept() if keep_logging else contextlib.nullcontext():
        return hydra_compat.run_job(
            hydra_context=job.hydra_context,
            task_function=job.task_function,
            config=config,
            job_dir_key="hydra.sweep.dir",
            job_subdir_key="hydra.sweep.subdir",
            configure_logging=rank == 0,  # the job's log file is rank 0's; other ranks log to their stderr
        )


def error_of(ret: Any) -> str | None:
    """A failed job's error as one line (``Type: message``); None when the job did not fail."""
    err = hydra_compat.job_error(ret)
    return None if err is None else f"{type(err).__name__}: {err}"


@contextlib.contextmanager
def _logging_kept() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        for handler in list(root.handlers):
            if handler not in handlers:
                root.removeHandler(handler)
                handler.close()
        for handler in handlers:
            if handler not in root.handlers:
                root.addHandler(handler)
        root.setLevel(level)
