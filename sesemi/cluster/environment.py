"""Where a run is and what that decides: the Lightning strategy and plugins, signal handling, the restart point.

The training app (:func:`sesemi.train.task`, for every job: a single run, a sweep trial, a SLURM task, a DDP rank
process) calls :func:`runtime_for` and hands the :class:`~sesemi.runtime.Runtime` to
:func:`sesemi.training.train`; core never imports this package.

``run.strategy=auto`` (the default) with ``run.devices * run.num_nodes > 1`` picks DDP the way that is correct for
where the job runs, so that every process gets the same config and only rank 0 writes the run dir:

- a SLURM job whose tasks are the processes (``hydra/launcher=slurm|slurm_cpu``, or your own ``srun``): ``ddp`` on
  Lightning's ``SLURMEnvironment(auto_requeue=False)``, one process per task; requeue belongs to submitit
  (:mod:`sesemi.cluster.signals`), Lightning's USR1 auto-requeue stays off;
- a submitit local job (``hydra/launcher=local``): ``ddp`` on :class:`SubmititEnvironment`, one process per task;
- a multirun job run in-process (Hydra's basic launcher, the Optuna sweeper...):
  :func:`sesemi.cluster.ranks.train_in_rank_processes`
  starts ``run.devices`` processes of the training app on the job's resolved config, like ``torchrun``, and the
  job process only waits for them. Lightning's ``ddp`` would re-execute ``sys.argv`` for every
  extra rank, i.e. the whole sweep; ``ddp_spawn`` must pickle the module, which holds Hydra ``_partial_``
  factories (optimizer, scheduler) that Hydra refuses to pickle, and returns only part of the trainer state;
- a single run (``python -m sesemi.train run.devices=2``): Lightning's ``ddp``, which starts ranks > 0 as
  ``sys.argv`` + ``hydra.run.dir=<the run dir>``, so they share the run dir.

Inside a SLURM allocation with a single task (``salloc``, an ``sbatch`` script without ``srun``) the run behaves
as a local one (Lightning's own environment), instead of Lightning waiting for SLURM tasks that do not exist.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Sequence
from typing import Any

import torch
from lightning_fabric.plugins.environments import ClusterEnvironment, LightningEnvironment, SLURMEnvironment
from omegaconf import DictConfig
from pytorch_lightning.strategies import DDPStrategy

from sesemi.cluster.validate import SPAWNING  # strategies that start their own processes
from sesemi.errors import ConfigError
from sesemi.runtime import Runtime


def num_devices(run: DictConfig) -> int:
    """``run.devices`` as a number (``auto``/``-1``: every visible GPU on GPU runs, else 1)."""
    devices = run.devices
    if devices in ("auto", -1, "-1"):
        accelerator = run.get("accelerator", "auto")
        gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
        return max(torch.cuda.device_count(), 1) if gpu else 1
    try:
        return int(devices)
    except (TypeError, ValueError):
        return 1  # not a count: build_trainer reports run.devices


def world_size(run: DictConfig) -> int:
    return num_devices(run) * int(run.num_nodes)


def submitit_executor() -> str | None:
    """``slurm`` or ``local`` inside a job started by submitit, else None."""
    return os.environ.get("SUBMITIT_EXECUTOR") or None


def slurm_ntasks() -> int | None:
    """The number of tasks of the SLURM job (step) this process runs in, or None outside SLURM."""
    # As SLURMEnvironment.detect(), without its warning about srun on login nodes.
    if "SLURM_NTASKS" not in os.environ or os.environ.get("SLURM_JOB_NAME") in ("bash", "interactive"):
        return None
    return int(os.environ["SLURM_NTASKS"])


def in_slurm_tasks() -> bool:
    """True inside a SLURM job step whose tasks are the training processes (``srun``/submitit tasks)."""
    return (slurm_ntasks() or 1) > 1


def in_multirun() -> bool:
    """True inside a Hydra multirun job (whatever the launcher)."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode
    except ImportError:  # pragma: no cover
        return False
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def launch_context(run: DictConfig) -> str:
    """Where this process runs: ``slurm-tasks``, ``submitit-tasks``, ``multirun`` or ``single``."""
    world = world_size(run)
    ntasks = slurm_ntasks()
    if ntasks is not None and ntasks > 1:
        if ntasks != world:
            raise ConfigError(
                "run.devices",
                f"this SLURM job has {ntasks} tasks but run.devices * run.num_nodes = "
                f"{run.devices} * {run.num_nodes} = {world} processes",
                "launch with -m hydra/launcher=slurm (one task per device: hydra.launcher.tasks_per_node="
                "${run.devices}), or srun with --ntasks-per-node=run.devices and --nodes=run.num_nodes",
            )
        return "slurm-tasks"
    if submitit_executor() == "local" and int(os.environ.get("SUBMITIT_LOCAL_NTASKS", "1")) > 1:
        tasks = int(os.environ["SUBMITIT_LOCAL_NTASKS"])
        if tasks != world:
            raise ConfigError(
                "hydra.launcher.tasks_per_node",
                f"this submitit job has {tasks} tasks but run.devices * run.num_nodes = {world}",
                "leave hydra.launcher.tasks_per_node=${run.devices} (hydra/launcher=local)",
            )
        return "submitit-tasks"
    if in_multirun():
        return "multirun"
    return "single"


class SubmititEnvironment(ClusterEnvironment):
    """The processes are the tasks of a submitit local job (``hydra/launcher=local``); ranks come from submitit."""

    def __init__(self) -> None:
        import submitit

        self._env = submitit.JobEnvironment()
        # The same port in every task of a job (crc32, not hash(): that is salted per process).
        self._port = 20000 + zlib.crc32(str(self._env.job_id).encode()) % 20000

    @property
    def creates_processes_externally(self) -> bool:
        return True

    @property
    def main_address(self) -> str:
        return os.environ.get("MASTER_ADDR", "127.0.0.1")

    @property
    def main_port(self) -> int:
        return int(os.environ.get("MASTER_PORT", self._port))

    @staticmethod
    def detect() -> bool:
        return submitit_executor() == "local"

    def world_size(self) -> int:
        return self._env.num_tasks

    def set_world_size(self, size: int) -> None:
        pass

    def global_rank(self) -> int:
        return self._env.global_rank

    def set_global_rank(self, rank: int) -> None:
        pass

    def local_rank(self) -> int:
        return self._env.local_rank

    def node_rank(self) -> int:
        return self._env.node


def resolve_strategy(run: DictConfig) -> Any:
    """The ``strategy`` argument of the Trainer for ``run`` (a name, or a configured Strategy object)."""
    context = launch_context(run)
    strategy = run.strategy
    if strategy != "auto":
        if context in ("slurm-tasks", "submitit-tasks") and any(strategy.startswith(s) for s in SPAWNING):
            raise ConfigError(
                "run.strategy",
                f"{strategy} starts its own processes, but here each process already is a "
                f"{'SLURM' if context == 'slurm-tasks' else 'submitit'} task",
                "use run.strategy=auto (or ddp)",
            )
        if context == "slurm-tasks" and strategy == "ddp":
            return DDPStrategy(cluster_environment=SLURMEnvironment(auto_requeue=False))
        if context == "submitit-tasks" and strategy == "ddp":
            return DDPStrategy(cluster_environment=SubmititEnvironment())
        return strategy
    if world_size(run) == 1:
        return "auto"
    if context == "slurm-tasks":
        # submitit owns preemption and requeue (USR2); Lightning's own USR1 requeue stays off.
        return DDPStrategy(cluster_environment=SLURMEnvironment(auto_requeue=False))
    if context == "submitit-tasks":
        return DDPStrategy(cluster_environment=SubmititEnvironment())
    # Local processes (a single run, or one of the rank processes of a multirun job). Inside a single-task SLURM
    # allocation Lightning would otherwise expect SLURM tasks.
    if slurm_ntasks() is not None:
        return DDPStrategy(cluster_environment=LightningEnvironment())
    return "ddp"


def resolve_plugins(run: DictConfig) -> list[Any]:
    """Extra Trainer plugins: a one-process run inside SLURM gets Lightning's SLURM environment without its USR1
    auto-requeue (one owner for requeue: submitit; multi-process runs carry the environment in their strategy)."""
    if world_size(run) == 1 and slurm_ntasks() == 1:
        return [SLURMEnvironment(auto_requeue=False)]
    return []


def runtime_for(cfg: DictConfig, callbacks: Sequence[Any] = ()) -> Runtime:
    """What this environment decides for the run of ``cfg``: strategy, plugins, restart point, and the signals
    owned by :class:`~sesemi.cluster.signals.StopOnSignal` for the whole run (its callback and its guard);
    ``callbacks``: those of whoever runs the job (a sweep's trial callback), after the signal handling."""
    from sesemi.cluster.signals import StopOnSignal, restart_checkpoint

    run_dir = str(cfg.run.output_dir)
    stop = StopOnSignal(run_dir, slurm=submitit_executor() == "slurm")
    return Runtime(
        strategy=resolve_strategy(cfg.run),
        plugins=resolve_plugins(cfg.run),
        callbacks=[stop, *callbacks],
        restart_checkpoint=restart_checkpoint(run_dir),
        guard=stop,
    )
