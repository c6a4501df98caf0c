"""submitit internals sesemi's launchers use, each with its reason (submitit has no public API for them).

Imported lazily (only when a job is submitted or runs): submitit is the optional ``cluster`` extra.
"""

from __future__ import annotations

from typing import Any


def job_paths(job: Any) -> Any:
    """stdout/stderr paths of task 0 of a job (``Job._sub_jobs``: a multi-task job's paths are per task)."""
    sub_jobs = getattr(job, "_sub_jobs", None)
    return sub_jobs[0].paths if sub_jobs else job.paths


def start_jobs_with(executor: Any, module: str) -> None:
    """Make an ``AutoExecutor``'s jobs run ``<python> -u -m <module> -u -m submitit.core._submit FOLDER``.

    submitit has no parameter for the module its jobs start with: it writes ``<python> -u -m submitit.core._submit
    FOLDER`` (``_submitit_command_str``) from its ``python`` parameter, so ``module`` goes there and takes the rest
    of the line as its arguments (see :mod:`sesemi.cluster.job`).
    """
    inner = executor._executor
    inner.python = f"{inner.python} -u -m {module}"


def report_at_once(job: Any) -> Any:
    """A local job whose process died without a result (``kill -9``, the OOM killer) reported when it ends, not 15 s
    later: submitit waits that long for a missing result file in case a network filesystem shows it late
    (``Job._results_timeout_s``), which a job on this machine's disk never needs. Returns ``job``."""
    job._results_timeout_s = 0
    return job


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


def process_job(folder: str) -> None:
    """Run the pickled job in ``folder`` as ``python -m submitit.core._submit FOLDER`` would
    (``submitit.core.submission.process_job``, submitit's job runner: sesemi's job process starts before it, see
    :mod:`sesemi.cluster.job`, and hands over to it)."""
    from submitit.core.submission import process_job as run

    run(folder)
