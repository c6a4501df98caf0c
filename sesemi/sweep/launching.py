"""How a sweeper runs its jobs: through the configured launcher, or, when that launcher runs jobs one after the other
inside the sweeper's process (Hydra's basic launcher) and the sweep wants several at once, as local processes on
submitit's local executor (sesemi's ``hydra/launcher=local``), one GPU each on a machine with several.

Why submitit's executor and no spawner of sesemi's own (there was one): it runs a pickled Hydra job in a process of
its own with its log files and its result, which is all a sweep job needs; measured on this machine, a trivial job
takes about as long to start and report through it as through a hand-written ``subprocess`` loop (docs/design.md).
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Sequence
from typing import Any

from omegaconf import DictConfig, open_dict, read_write

from sesemi.cluster.capabilities import capabilities_of
from sesemi.compat.hydra import job_error

log = logging.getLogger("sesemi.sweep")

LOCAL_LAUNCHER = "hydra/launcher=local"


def visible_gpus() -> list[str]:
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g for g in env.split(",") if g.strip()]
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())]
    except Exception:  # noqa: BLE001 - no torch/CUDA: no GPUs to share out
        return []


class SweepLaunch:
    """Launches a sweeper's jobs and waits for them; per job None (it ran) or why it did not."""

    def __init__(self, launcher: Any, hydra_context: Any, config: DictConfig, task: Any, parallel: int) -> None:
        self.gpus: list[str] = []
        if parallel > 1 and not capabilities_of(launcher).processes:
            launcher = local_launcher(hydra_context, config, task)
            self.gpus = visible_gpus()
        self.launcher = launcher

    def __call__(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list[str | None]:
        jobs = [list(o) for o in job_overrides]
        if len(self.gpus) > 1:  # job k sees GPU k mod n only
            for k, overrides in enumerate(jobs):
                gpu = self.gpus[(initial_job_idx + k) % len(self.gpus)]
                overrides.append(f"++hydra.job.env_set.CUDA_VISIBLE_DEVICES={gpu}")
        try:
            returns = self.launcher.launch(jobs, initial_job_idx=initial_job_idx)
        except Exception as err:  # noqa: BLE001 - e.g. a SLURM job killed: submitit raises for the whole batch
            log.error("launcher: %s: %s", type(err).__name__, err)
            return [f"lost: {type(err).__name__}: {str(err)[:500]}"] * len(jobs)
        return [_error(ret) for ret in returns]


def _error(ret: Any) -> str | None:
    """None for a job that ran; ``lost: ...`` for one that ended without a result (killed, its node lost), which a
    sweeper retries; else the job's error."""
    err = job_error(ret)
    if err is None:
        return None
    text = f"{type(err).__name__}: {err}"
    return f"lost: {text}" if _never_finished(err) else text


def _never_finished(err: BaseException) -> bool:
    try:
        from submitit.core.utils import UncompletedJobError
    except ImportError:  # no cluster extra: no submitit jobs
        return False
    return isinstance(err, UncompletedJobError)


def local_launcher(hydra_context: Any, config: DictConfig, task: Any) -> Any:
    """sesemi's local launcher for the sweep: every job composes with ``hydra/launcher=local`` (its resources follow
    the run config, as on SLURM)."""
    from hydra.core.plugins import Plugins

    local = copy.deepcopy(config)
    with read_write(local), open_dict(local):
        local.hydra.overrides.hydra.append(LOCAL_LAUNCHER)
        local.hydra.launcher = hydra_context.config_loader.load_sweep_config(config, [LOCAL_LAUNCHER]).hydra.launcher
    return Plugins.instance().instantiate_launcher(config=local, hydra_context=hydra_context, task_function=task)
