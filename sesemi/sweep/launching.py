"""How a sweeper runs its jobs: through the configured launcher, or, when that launcher runs jobs one after the other
inside the sweeper's process (Hydra's basic launcher) and the sweep wants several at once, as local processes on
submitit's local executor, all at once, one GPU each on a machine with several.

Why submitit's executor and no spawner of sesemi's own (there was one, ``sesemi.sweep.local``): it runs a pickled
callable in a process of its own with its log files and its result, and tells a job that ended without a result
(killed) from one that failed, which is all a sweep job needs; the job itself is the job runner's
(:func:`sesemi.cluster.job_runner.run`), as on any launcher. Measured on this machine, see docs/design.md.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from sesemi.cluster.capabilities import capabilities_of
from sesemi.cluster.job_runner import HydraJob, run
from sesemi.cluster.packing import visible_gpus
from sesemi.compat.hydra import JobReturn, JobStatus, job_error, singleton_state
from sesemi.sweepdir import SUBMITIT_DIR

log = logging.getLogger("sesemi.sweep")


class SweepLaunch:
    """Launches a sweeper's jobs and waits for them; per job None (it ran) or why it did not."""

    def __init__(self, launcher: Any, hydra_context: Any, config: DictConfig, task: Any, parallel: int) -> None:
        self.launcher = launcher
        if parallel > 1 and not capabilities_of(launcher).processes:
            self.launcher = LocalProcesses(hydra_context, config, task)

    def __call__(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list[str | None]:
        jobs = [list(o) for o in job_overrides]
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


class LocalProcesses:
    """A launcher of sorts: the jobs of one launch as processes on submitit's local executor, all at once (job k sees
    GPU k mod n on a machine with several), waited for; their logs in ``<sweep dir>/.submitit/<job id>/``."""

    def __init__(self, hydra_context: Any, config: DictConfig, task: Any) -> None:
        self.hydra_context = hydra_context
        self.config = config
        self.task = task
        self.gpus = visible_gpus()

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list[JobReturn]:
        import submitit

        from sesemi.compat import submitit as compat_submitit

        folder = Path(str(self.config.hydra.sweep.dir)) / SUBMITIT_DIR / "%j"
        singletons = singleton_state()
        handles = []
        for k, overrides in enumerate(job_overrides):
            num = initial_job_idx + k
            executor = submitit.LocalExecutor(folder=folder)
            gpu = [int(self.gpus[num % len(self.gpus)])] if len(self.gpus) > 1 else []
            executor.update_parameters(timeout_min=60 * 24 * 365, visible_gpus=gpu, gpus_per_node=len(gpu))
            job = HydraJob(self.hydra_context, self.config, self.task, list(overrides), num, f"job_{num}", singletons)
            handles.append(compat_submitit.report_at_once(executor.submit(run, job)))
            log.info("local job %s (%s): %s", num, handles[-1].job_id, " ".join(overrides))
        while not all(h.done() for h in handles):
            time.sleep(0.5)
        return [_result(h, overrides) for h, overrides in zip(handles, job_overrides)]


def _result(handle: Any, overrides: Sequence[str]) -> JobReturn:
    """The job's ``JobReturn``; one that ended without a result (killed) carries the error that says so."""
    try:
        return handle.result()
    except Exception as err:  # noqa: BLE001 - a job that died: reported as its failed return
        ret = JobReturn(overrides=list(overrides), status=JobStatus.FAILED)
        ret.return_value = err
        return ret
