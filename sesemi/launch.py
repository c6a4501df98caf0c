"""How processes are launched for multi-device runs: which Lightning strategy fits where the run was started."""

from __future__ import annotations

import os

from omegaconf import DictConfig


def in_slurm_tasks() -> bool:
    """True inside a SLURM job step whose tasks are the training processes (``srun``/submitit tasks)."""
    return "SLURM_NTASKS" in os.environ and os.environ.get("SLURM_JOB_NAME") not in ("bash", "interactive")


def resolve_strategy(run: DictConfig) -> str:
    if run.strategy != "auto":
        return run.strategy
    world = (1 if run.devices in ("auto", -1) else int(run.devices)) * int(run.num_nodes)
    if world == 1:
        return "auto"
    return "ddp"
