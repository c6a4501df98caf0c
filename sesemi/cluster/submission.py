"""Submitting planned jobs through submitit: one executor and one job array per group of equal resources.

submitit and hydra-submitit-launcher are the optional ``cluster`` extra: nothing here imports them at module level
(Hydra imports the launcher plugin, and with it this module, on every start). :func:`missing_extra` tells which
package is missing, so that choosing a sesemi launcher without them is one error line naming the extra.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from sesemi.cluster.plan import JobPlan
from sesemi.cluster.snapshot import Snapshot, python_command

CLUSTER_EXTRA = "pip install 'sesemi[cluster]'"


def missing_extra() -> str | None:
    """The missing package of the ``cluster`` extra, or None when it is installed (then its schemas are
    registered)."""
    try:
        from sesemi.cluster import schemas
    except ModuleNotFoundError as err:
        if err.name and err.name.split(".")[0] in ("hydra_plugins", "submitit"):
            return "hydra-submitit-launcher"
        raise
    schemas.register()
    try:
        import submitit  # noqa: F401
    except ModuleNotFoundError:
        return "submitit"
    return None


def make_executor(executor_kind: str, params: dict[str, Any], sweep_dir: Path, code: Snapshot | None = None) -> Any:
    """A submitit ``AutoExecutor`` for one job's resolved ``hydra.launcher`` parameters (sesemi's keys removed);
    with ``code``, its jobs start on that snapshot's code and configs."""
    import submitit

    from sesemi.cluster.schemas import BASE_KEYS
    from sesemi.compat import submitit as compat_submitit

    params = dict(params)
    folder = Path(str(params.pop("submitit_folder")))
    if not folder.is_absolute():
        folder = sweep_dir / folder
    init: dict[str, Any] = {"folder": str(folder)}
    for key in ("max_num_timeout", "python"):
        value = params.pop(key, None)
        if key == "python" and code is not None:
            value = python_command(code, value)
        if value is not None:
            init[f"{executor_kind}_{key}"] = value
    executor = submitit.AutoExecutor(cluster=executor_kind, **init)
    compat_submitit.start_jobs_with(executor, "sesemi.cluster.job")
    executor.update_parameters(**{k if k in BASE_KEYS else f"{executor_kind}_{k}": v for k, v in params.items()})
    return executor


def submit(
    executor_kind: str,
    job: Callable[..., Any],
    group: list[JobPlan],
    sweep_dir: Path,
    args_of: Callable[[JobPlan], Sequence[Any]],
    code: Snapshot | None = None,
) -> None:
    """Submit one group of jobs with equal resources as one job array: ``job(*args_of(plan))`` for each plan
    (each plan gets its submitit job as ``handle``)."""
    executor = make_executor(executor_kind, group[0].params, sweep_dir, code)
    handles = executor.map_array(job, *zip(*(args_of(p) for p in group)))
    for plan, handle in zip(group, handles):
        plan.handle = handle


def job_files(plan: JobPlan) -> dict[str, str]:
    """The job id and the log files of a submitted job (empty before submission)."""
    from sesemi.compat.submitit import job_paths

    if plan.handle is None:
        return {"job_id": "", "stdout": "", "stderr": ""}
    paths = job_paths(plan.handle)
    return {"job_id": str(plan.handle.job_id), "stdout": str(paths.stdout), "stderr": str(paths.stderr)}


def ledger_entry(
    plan: JobPlan, error: str | None = None, state: str | None = None, code: Snapshot | None = None
) -> dict[str, Any]:
    """A job's entry in ``jobs.json``: its point, job id, logs, run dir, resources and code snapshot (what
    ``--resubmit`` needs to submit the point again as it was), and once it ended, the scheduler's state and its
    error."""
    entry: dict[str, Any] = {
        "num": plan.num,
        **job_files(plan),
        "run_dir": str(plan.run_dir),
        "overrides": plan.overrides,
        "params": plan.params,
    }
    if code is not None:
        entry["snapshot"] = str(code.path)
    if error:
        entry["error"] = error
    if state:
        entry["job_state"] = state
    return entry


def sbatch_script(executor_kind: str, params: dict[str, Any], sweep_dir: Path, n_jobs: int) -> str | None:
    """The sbatch script a group of ``n_jobs`` would be submitted with (SLURM only), for the dry run."""
    if executor_kind != "slurm":
        return None
    from sesemi.compat.submitit import sbatch_script as render

    return render(make_executor(executor_kind, params, sweep_dir), n_jobs)
