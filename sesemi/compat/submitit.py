"""submitit internals sesemi's launchers use, each with its reason (submitit has no public API for them).

Imported lazily (only when a job is submitted or runs): submitit is the optional ``cluster`` extra.
"""

from __future__ import annotations

import signal
from typing import Any


def job_paths(job: Any) -> Any:
    """stdout/stderr paths of task 0 of a job (``Job._sub_jobs``: a multi-task job's paths are per task)."""
    sub_jobs = getattr(job, "_sub_jobs", None)
    return sub_jobs[0].paths if sub_jobs else job.paths


def usr_signal() -> signal.Signals:
    """submitit's preemption/time-limit signal (``JobEnvironment._usr_sig``, from SUBMITIT_PREEMPT_SIGNAL)."""
    import submitit

    return submitit.JobEnvironment._usr_sig()


def sbatch_script(executor: Any, n_jobs: int) -> str:
    """The sbatch script an ``AutoExecutor`` for SLURM would submit for an array of ``n_jobs`` (dry run).

    submitit writes it only while submitting (``_make_submission_file_text`` on the wrapped ``SlurmExecutor``);
    a fresh executor with the same parameters renders it without submitting.
    """
    from submitit.slurm.slurm import SlurmExecutor

    inner = executor._executor
    assert isinstance(inner, SlurmExecutor)
    preview = SlurmExecutor(inner.folder, inner.max_num_timeout, python=inner.python)
    preview.update_parameters(**inner.parameters)
    if n_jobs > 1:
        preview.parameters["map_count"] = n_jobs
    return preview._make_submission_file_text(preview._submitit_command_str, "dry-run")
