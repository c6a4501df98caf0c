"""How processes are launched for multi-device runs: which Lightning strategy fits where the run was started.

``run.strategy=auto`` (the default) with ``run.devices * run.num_nodes > 1`` picks DDP the way that is correct for
where the job runs, so that every process gets the same config and only rank 0 writes the run dir:

==========================================  =====================================================================
where                                        processes / strategy
==========================================  =====================================================================
SLURM job whose tasks are the processes      ``ddp`` on :class:`SLURMEnvironment` ``(auto_requeue=False)``: one
(``hydra/launcher=slurm``, or ``srun``)      process per SLURM task; requeue is submitit's (see sesemi.cluster)
submitit local job (``hydra/launcher=local``)  ``ddp`` on :class:`SubmititEnvironment`: one process per submitit task
a multirun job run in-process (basic          ``ddp_spawn`` (:class:`SpawnDDPStrategy`): Lightning's ``ddp`` would
launcher, Optuna...)                         re-execute ``sys.argv``, i.e. the whole sweep, in every extra rank
a single run (``python -m sesemi.train``)    ``ddp``: Lightning starts ranks > 0 as ``sys.argv`` + ``hydra.run.dir``
==========================================  =====================================================================

Inside a SLURM allocation with a single task (``salloc``, an ``sbatch`` script without ``srun``) the run behaves
as a local one (Lightning's own environment), instead of Lightning waiting for SLURM tasks that do not exist.
"""

from __future__ import annotations

import io
import os
import zlib
from typing import Any

import torch
from lightning_fabric.plugins.environments import ClusterEnvironment, LightningEnvironment, SLURMEnvironment
from omegaconf import DictConfig
from pytorch_lightning.strategies import DDPStrategy
from pytorch_lightning.strategies.launchers.multiprocessing import _MultiProcessingLauncher

from sesemi.errors import ConfigError

# Strategies that start their own processes: wrong wherever the processes are SLURM/submitit tasks.
SPAWNING = ("ddp_spawn", "ddp_fork", "ddp_notebook", "ddp_spawn_find_unused_parameters_true")


def num_devices(run: DictConfig) -> int:
    """``run.devices`` as a number (``auto``/``-1``: every visible GPU on GPU runs, else 1)."""
    devices = run.devices
    if devices in ("auto", -1, "-1"):
        accelerator = run.get("accelerator", "auto")
        gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
        return max(torch.cuda.device_count(), 1) if gpu else 1
    return int(devices)


def world_size(run: DictConfig) -> int:
    return num_devices(run) * int(run.num_nodes)


def submitit_executor() -> str | None:
    """``slurm`` or ``local`` inside a job started by submitit, else None."""
    return os.environ.get("SUBMITIT_EXECUTOR") or None


def slurm_ntasks() -> int | None:
    """The number of tasks of the SLURM job (step) this process runs in, or None outside SLURM."""
    if not SLURMEnvironment.detect():
        return None
    return int(os.environ.get("SLURM_NTASKS", "1"))


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


class _StateReturningLauncher(_MultiProcessingLauncher):
    """Lightning's spawn launcher, also sending the fit loop and checkpoint-callback states back to the caller."""

    def get_extra_results(self, trainer: Any) -> dict[str, Any]:
        extra = super().get_extra_results(trainer)
        state: dict[str, Any] = {"fit_loop": trainer.fit_loop.state_dict()}
        if trainer.checkpoint_callback is not None:
            state["checkpoint"] = trainer.checkpoint_callback.state_dict()
        buffer = io.BytesIO()
        torch.save(state, buffer)  # bytes, not tensors: shared-memory tensors die with the worker
        extra["sesemi_state"] = buffer.getvalue()
        return extra

    def update_main_process_results(self, trainer: Any, extra: dict[str, Any]) -> None:
        super().update_main_process_results(trainer, extra)
        if "sesemi_state" not in extra or trainer.state.fn != "fit":
            return
        state = torch.load(io.BytesIO(extra["sesemi_state"]), weights_only=False)
        trainer.fit_loop.load_state_dict(state["fit_loop"])
        if "checkpoint" in state and trainer.checkpoint_callback is not None:
            trainer.checkpoint_callback.load_state_dict(state["checkpoint"])


class SpawnDDPStrategy(DDPStrategy):
    """``ddp_spawn`` for multirun jobs: the process that called ``fit`` sees the global step, the best score and the
    last checkpoint afterwards (Lightning's spawn launcher only returns the weights, ``best_model_path`` and the
    callback metrics), so :func:`sesemi.train.train` reports the same record as with any other strategy."""

    strategy_name = "ddp_spawn"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(start_method="spawn", **kwargs)

    def _configure_launcher(self) -> None:
        self._launcher = _StateReturningLauncher(self, start_method=self._start_method)


def resolve_strategy(run: DictConfig) -> Any:
    """The ``strategy`` argument of the Trainer for ``run`` (a name, or a configured Strategy object)."""
    context = launch_context(run)
    strategy = run.strategy
    if strategy != "auto":
        if context in ("slurm-tasks", "submitit-tasks") and strategy in SPAWNING:
            raise ConfigError(
                "run.strategy",
                f"{strategy} starts its own processes, but here each process already is a "
                f"{'SLURM' if context == 'slurm-tasks' else 'submitit'} task",
                "use run.strategy=auto (or ddp)",
            )
        if context == "multirun" and strategy == "ddp" and world_size(run) > 1:
            raise ConfigError(
                "run.strategy",
                "ddp re-executes the command line for every extra rank, which inside a multirun repeats the sweep",
                "use run.strategy=auto (ddp_spawn in a local sweep) or hydra/launcher=slurm|local",
            )
        if context == "slurm-tasks" and strategy == "ddp":
            return DDPStrategy(cluster_environment=SLURMEnvironment(auto_requeue=False))
        return strategy
    if world_size(run) == 1:
        return "auto"
    if context == "slurm-tasks":
        # submitit owns preemption and requeue (USR2); Lightning's own USR1 requeue stays off.
        return DDPStrategy(cluster_environment=SLURMEnvironment(auto_requeue=False))
    if context == "submitit-tasks":
        return DDPStrategy(cluster_environment=SubmititEnvironment())
    # Local processes. Inside a single-task SLURM allocation Lightning would otherwise expect SLURM tasks.
    environment = LightningEnvironment() if slurm_ntasks() is not None else None
    if context == "multirun":
        return SpawnDDPStrategy(cluster_environment=environment)
    return DDPStrategy(cluster_environment=environment) if environment is not None else "ddp"


def resolve_plugins(run: DictConfig) -> list[Any]:
    """Extra Trainer plugins: a one-process run inside SLURM gets Lightning's SLURM environment without its USR1
    auto-requeue (one owner for requeue: submitit; multi-process runs carry the environment in their strategy)."""
    if world_size(run) == 1 and slurm_ntasks() == 1:
        return [SLURMEnvironment(auto_requeue=False)]
    return []


def cluster_callbacks(cfg: DictConfig) -> list[Any]:
    """Callbacks a cluster job needs: the preemption handler inside submitit SLURM jobs (see sesemi.cluster)."""
    if submitit_executor() != "slurm":
        return []
    from sesemi.cluster.requeue import PreemptionCallback

    return [PreemptionCallback(cfg.run.output_dir)]
