"""How processes are launched for multi-device runs: which Lightning strategy fits where the run was started.

``run.strategy=auto`` (the default) with ``run.devices * run.num_nodes > 1`` picks DDP the way that is correct for
where the job runs, so that every process gets the same config and only rank 0 writes the run dir:

- a SLURM job whose tasks are the processes (``hydra/launcher=slurm|slurm_cpu``, or your own ``srun``): ``ddp`` on
  Lightning's ``SLURMEnvironment(auto_requeue=False)``, one process per task; requeue belongs to submitit
  (:mod:`sesemi.cluster.requeue`), Lightning's USR1 auto-requeue stays off;
- a submitit local job (``hydra/launcher=local``): ``ddp`` on :class:`SubmititEnvironment`, one process per task;
- a multirun job run in-process (Hydra's basic launcher, the Optuna sweeper...): :func:`train_in_rank_processes`
  starts ``run.devices`` fresh processes (``python -m sesemi.cluster.ranks``) on the job's resolved config, like
  ``torchrun``, and the job process only waits for them. Lightning's ``ddp`` would re-execute ``sys.argv`` for every
  extra rank, i.e. the whole sweep; ``ddp_spawn`` must pickle the module, which holds Hydra ``_partial_``
  factories (optimizer, scheduler) that Hydra refuses to pickle, and returns only part of the trainer state;
- a single run (``python -m sesemi.train run.devices=2``): Lightning's ``ddp``, which starts ranks > 0 as
  ``sys.argv`` + ``hydra.run.dir=<the run dir>``, so they share the run dir.

Inside a SLURM allocation with a single task (``salloc``, an ``sbatch`` script without ``srun``) the run behaves
as a local one (Lightning's own environment), instead of Lightning waiting for SLURM tasks that do not exist.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

import torch
from lightning_fabric.plugins.environments import ClusterEnvironment, LightningEnvironment, SLURMEnvironment
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.strategies import DDPStrategy

from sesemi.cluster.validate import SPAWNING  # strategies that start their own processes
from sesemi.errors import ConfigError


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


def cluster_callbacks(cfg: DictConfig) -> list[Any]:
    """Callbacks a cluster job needs: the preemption handler inside submitit SLURM jobs (see sesemi.cluster)."""
    if submitit_executor() != "slurm":
        return []
    from sesemi.cluster.requeue import PreemptionCallback

    return [PreemptionCallback(cfg.run.output_dir)]


# --------------------------------------------------------------------------------------------------------------------
# Multirun jobs run in-process: the ranks are fresh processes on the job's resolved config.


def needs_rank_processes(cfg: DictConfig) -> bool:
    """True for a multi-device job of a multirun that runs inside the sweep's process (not a submitit/SLURM task)."""
    run = cfg.run
    if "LOCAL_RANK" in os.environ or run.strategy not in ("auto", "ddp"):
        return False
    try:
        return world_size(run) > 1 and launch_context(run) == "multirun"
    except ConfigError:
        return False  # reported by build_trainer, with the run dir's status


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _job_log_file() -> str | None:
    """The Hydra job's log file (rank 0 appends to it, as if it ran in the job process)."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            return handler.baseFilename
    return None


def train_in_rank_processes(cfg: DictConfig) -> dict[str, Any]:
    """Run ``sesemi.train.train`` in ``run.devices`` fresh processes (DDP ranks) and return rank 0's metrics.

    Every rank gets the job's fully resolved config (same hyperparameters, same run dir); Lightning sees
    ``LOCAL_RANK``/``WORLD_SIZE``/``MASTER_PORT`` and starts no processes itself. Rank 0 writes the run dir as in
    any run. If a rank fails the others are stopped, and the job fails with rank 0's error (or the failed rank's).
    """
    from sesemi.rundir import RunRecord, read_metrics, read_status

    run = cfg.run
    if int(run.num_nodes) != 1:
        raise ConfigError(
            "run.num_nodes",
            f"is {run.num_nodes}, but a local sweep job runs on this machine",
            "set run.num_nodes=1, or launch the sweep with -m hydra/launcher=slurm",
        )
    n = num_devices(run)
    run_dir = Path(str(run.output_dir))
    resolved = OmegaConf.to_container(cfg, resolve=True)
    with tempfile.TemporaryDirectory(prefix="sesemi-ranks-") as tmp:
        config_path = Path(tmp) / "config.yaml"
        config_path.write_text(OmegaConf.to_yaml(OmegaConf.create(resolved)))
        env = {
            **os.environ,
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(_free_port()),
            "WORLD_SIZE": str(n),
            "NODE_RANK": "0",
        }
        log_file = _job_log_file()
        procs = []
        try:
            for rank in range(n):
                cmd = [
                    sys.executable,
                    "-m",
                    "sesemi.cluster.ranks",
                    str(config_path),
                    "--result",
                    str(Path(tmp) / f"rank{rank}.json"),
                ]
                if rank == 0 and log_file:
                    cmd += ["--log-file", log_file]
                procs.append(subprocess.Popen(cmd, env={**env, "LOCAL_RANK": str(rank), "RANK": str(rank)}))
            failed: int | None = None
            while any(p.poll() is None for p in procs):
                failed = next((r for r, p in enumerate(procs) if p.returncode not in (None, 0)), None)
                if failed is not None:
                    break
                time.sleep(0.2)
            if failed is None:
                failed = next((r for r, p in enumerate(procs) if p.returncode != 0), None)
        finally:
            for p in procs:  # a failed rank leaves the others waiting in a collective: stop them
                if p.poll() is None:
                    p.terminate()
            for p in procs:
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        results = {}
        for rank in range(n):
            path = Path(tmp) / f"rank{rank}.json"
            if path.is_file():
                results[rank] = json.loads(path.read_text())
    status = read_status(run_dir) or {}
    if failed is None and status.get("state") == "completed":
        return read_metrics(run_dir) or {}
    # Rank 0's error if it has one, else the first failed rank's.
    result = results.get(0) if results.get(0, {}).get("error") else results.get(failed or 0, {})
    if result.get("type") == "ConfigError":
        err: BaseException = ConfigError(result["key"], result["problem"], result["fix"])
    else:
        rank = failed if failed is not None else 0
        code = procs[rank].returncode if procs else None
        err = RuntimeError(
            f"DDP rank {rank} of {n} failed (exit code {code}): {result.get('error') or 'see its stderr'}"
        )
    if status.get("state") not in ("failed", "completed"):
        RunRecord(run_dir).fail(err)
    raise err
