"""Resource checks of a sweep job before submission: what the launcher asks for must fit the job's run config.

Each process of a DDP run is one SLURM (or submitit) task, so ``tasks_per_node == run.devices`` and
``nodes == run.num_nodes``; the GPU profile (``hydra/launcher=slurm``) asks for ``run.devices`` GPUs per node, the
CPU profile (``slurm_cpu``) for none. The launcher configs derive these from ``run.*``, so a mismatch comes from an
explicit ``hydra.launcher.*`` override; it is reported with the keys involved and the fix, before submission.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sesemi.errors import ConfigError

# Strategies that start their own processes (wrong where the processes are tasks).
SPAWNING = ("ddp_spawn", "ddp_fork", "ddp_notebook")


def _as_int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _gpu_request(launcher: Mapping[str, Any]) -> tuple[str, Any] | None:
    """The ``hydra.launcher`` key (and value) that requests GPUs, if any."""
    for key in ("gpus_per_node", "gpus_per_task"):
        if (_as_int(launcher.get(key)) or 0) > 0:
            return key, launcher[key]
    if "gpu" in str(launcher.get("gres") or ""):
        return "gres", launcher["gres"]
    for key, value in (launcher.get("additional_parameters") or {}).items():
        name = key.replace("_", "-")
        if name in ("gpus", "gpus-per-node", "gpus-per-task") and str(value) != "0":
            return f"additional_parameters.{key}", value
        if name == "gres" and "gpu" in str(value):
            return f"additional_parameters.{key}", value
    return None


def check_job(
    launcher: Mapping[str, Any], run: Mapping[str, Any], *, profile: str, executor: str, points_per_job: int = 1
) -> list[ConfigError]:
    """The problems of one job; empty when it can be submitted.

    ``launcher`` is the job's resolved ``hydra.launcher``, ``run`` its resolved ``run`` values (devices, num_nodes,
    accelerator, strategy), ``profile`` ``gpu``, ``cpu`` or ``local`` and ``executor`` ``slurm`` or ``local``;
    ``points_per_job``: the sweep points the job runs, one process each (:mod:`sesemi.cluster.packing`): each a
    one-process run, and the job's GPUs (``gpus_per_node``) shared among them, at most one per point.
    """
    name = {"gpu": "slurm", "cpu": "slurm_cpu"}.get(profile, "local") if executor == "slurm" else "local"
    devices = _as_int(run.get("devices"))
    if devices is None or devices < 1:
        return [
            ConfigError(
                "run.devices",
                f"is {run.get('devices')!r}, but a cluster job asks for a number of tasks (one per device) per node",
                "set run.devices=N (GPUs per node on hydra/launcher=slurm, CPU processes on slurm_cpu/local)",
            )
        ]
    problems: list[ConfigError] = []
    num_nodes = _as_int(run.get("num_nodes")) or 1
    if points_per_job > 1 and (devices != 1 or num_nodes != 1):
        problems.append(
            ConfigError(
                "hydra.launcher.points_per_job",
                f"is {points_per_job}, but run.devices={devices} and run.num_nodes={num_nodes}: the points of a "
                "packed job are one process each",
                "set run.devices=1 run.num_nodes=1 (the job's GPUs are shared out among its points: "
                "hydra.launcher.gpus_per_node), or hydra.launcher.points_per_job=1 for multi-device points",
            )
        )
    tasks = launcher.get("tasks_per_node")
    if _as_int(tasks) != devices:
        problems.append(
            ConfigError(
                "hydra.launcher.tasks_per_node",
                f"is {tasks} but run.devices={devices}; every DDP process is one task",
                f"drop the hydra.launcher.tasks_per_node override (it follows run.devices) or set run.devices={tasks}",
            )
        )
    nodes = launcher.get("nodes")
    if _as_int(nodes) != num_nodes:
        problems.append(
            ConfigError(
                "hydra.launcher.nodes",
                f"is {nodes} but run.num_nodes={num_nodes}",
                f"drop the hydra.launcher.nodes override (it follows run.num_nodes) or set run.num_nodes={nodes}",
            )
        )
    if executor == "local" and num_nodes != 1:
        problems.append(
            ConfigError(
                "run.num_nodes",
                f"is {num_nodes}, but hydra/launcher=local runs on this machine",
                "set run.num_nodes=1, or use hydra/launcher=slurm for multi-node jobs",
            )
        )
    accelerator = str(run.get("accelerator", "auto"))
    gpus = _gpu_request(launcher)
    if profile == "cpu":
        if gpus:
            problems.append(
                ConfigError(
                    f"hydra.launcher.{gpus[0]}",
                    f"is {gpus[1]}: hydra/launcher={name} is the CPU-only profile and requests no GPUs",
                    "use hydra/launcher=slurm for GPU jobs",
                )
            )
        if accelerator in ("gpu", "cuda"):
            problems.append(
                ConfigError(
                    "run.accelerator",
                    f"is {accelerator} on the CPU-only profile hydra/launcher={name}",
                    "set run.accelerator=cpu, or use hydra/launcher=slurm for GPU jobs",
                )
            )
    elif profile == "gpu":
        gpus_per_node = _as_int(launcher.get("gpus_per_node"))
        if accelerator == "cpu" and (gpus_per_node or 0) > 0:
            problems.append(
                ConfigError(
                    "hydra.launcher.gpus_per_node",
                    f"is {gpus_per_node} but run.accelerator=cpu would leave those GPUs idle",
                    "use hydra/launcher=slurm_cpu for CPU jobs, or run.accelerator=auto|gpu",
                )
            )
        elif points_per_job > 1 and (gpus_per_node or 0) > points_per_job:
            problems.append(
                ConfigError(
                    "hydra.launcher.gpus_per_node",
                    f"is {gpus_per_node} but a job runs hydra.launcher.points_per_job={points_per_job} one-GPU "
                    "points: the other GPUs would stay idle",
                    f"set hydra.launcher.gpus_per_node to at most {points_per_job} (fewer: points share a GPU), "
                    f"or hydra.launcher.points_per_job={gpus_per_node}",
                )
            )
        elif points_per_job == 1 and gpus_per_node is not None and gpus_per_node != devices:
            problems.append(
                ConfigError(
                    "hydra.launcher.gpus_per_node",
                    f"is {gpus_per_node} but run.devices={devices}; every DDP process drives one GPU",
                    "drop the hydra.launcher.gpus_per_node override (it follows run.devices) "
                    f"or set run.devices={gpus_per_node}",
                )
            )
    strategy = str(run.get("strategy", "auto"))
    if devices * num_nodes > 1 and any(strategy.startswith(s) for s in SPAWNING):
        problems.append(
            ConfigError(
                "run.strategy",
                f"is {strategy}, which starts its own processes, but on hydra/launcher={name} the processes "
                "are the job's tasks",
                "set run.strategy=auto (or ddp)",
            )
        )
    return problems


# What a SLURM submission runs on this machine: sbatch submits, srun starts the tasks (submitit refuses to build
# its executor without it, for a dry run too), sacct follows the jobs to their end.
SLURM_COMMANDS = ("sbatch", "srun", "sacct")


def missing_slurm_commands(launcher: str, dry_run: bool) -> ConfigError | None:
    """The error for a SLURM launcher (``launcher``: the ``hydra/launcher`` chosen) on a machine without SLURM's
    commands on ``PATH`` (None: they are there). Checked before anything is made: submitit's own "Could not detect
    srun" came after the sweep dir was."""
    import shutil

    needed = ("srun",) if dry_run else SLURM_COMMANDS
    missing = [command for command in needed if shutil.which(command) is None]
    if not missing:
        return None
    return ConfigError(
        "hydra/launcher",
        f"is {launcher}, but SLURM's commands are not on this machine's PATH (missing: {', '.join(missing)}); "
        "nothing was submitted",
        "run the command on a SLURM login node (where sinfo answers), or run its jobs here one after another: "
        "hydra/launcher=basic (and no hydra.launcher.* settings of SLURM's)",
    )
