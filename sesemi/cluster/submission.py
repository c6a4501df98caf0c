"""Submitting planned jobs through submitit: one executor and one job array per group of equal resources.

submitit and hydra-submitit-launcher are the optional ``cluster`` extra: nothing here imports them at module level
(Hydra imports the launcher plugin, and with it this module, on every start). :func:`missing_extra` tells which
package is missing, so that choosing a sesemi launcher without them is one error line naming the extra.
"""

from __future__ import annotations

import functools
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from sesemi.atomic import replacing
from sesemi.cluster import slurm
from sesemi.cluster.plan import JobPlan
from sesemi.cluster.snapshot import Snapshot, python_command

log = logging.getLogger("sesemi.cluster")

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
    import importlib.util

    # Looked up, not imported: importing submitit costs every start of the app (--help, TAB completion) ~0.03 s.
    if importlib.util.find_spec("submitit") is None:
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


class SharedJob:
    """What each job of a submission runs: the submission's launcher (with the sweep's config and Hydra's
    singletons), pickled once into ``payload``, called with the job's own arguments.

    submitit pickles a function and its arguments for every job; pickling the launcher itself each time (the
    sweep's config, the ConfigStore, the plugin registry) took ~90 ms a job, most of a 2,000-point submission. This
    object is a path: each job's own pickle holds only it and the job's overrides.
    """

    def __init__(self, payload: Path) -> None:
        self.payload = str(payload)

    def __call__(self, *args: Any) -> Any:
        launcher, singletons = _load(self.payload)
        return launcher(*args, singletons)

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """submitit's requeue hook: the same call again (same sweep job, same run dir)."""
        import submitit

        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


class PackedJob(SharedJob):
    """What each job of a packed submission runs (``hydra.launcher.points_per_job`` > 1): its K points, each with the
    arguments a :class:`SharedJob` takes, as K processes (:func:`sesemi.cluster.packing.run_points`); returns their
    K results."""

    def __init__(self, payload: Path, packing: Any) -> None:
        super().__init__(payload)
        self.packing = packing

    def __call__(self, points: Sequence[Sequence[Any]]) -> Any:  # type: ignore[override]
        from sesemi.cluster.packing import run_points

        return run_points(self.payload, points, self.packing)

    def single(self, points: Sequence[Sequence[Any]], num: int) -> tuple[SharedJob, tuple[Any, ...]]:
        """Point ``num`` of this job as a job of its own: the one-point job and its arguments (``--resubmit``)."""
        (args,) = [tuple(p) for p in points if p[2] == num]
        return SharedJob(Path(self.payload)), args


def unpacked(function: Any, args: Sequence[Any], num: int) -> tuple[Any, tuple[Any, ...]]:
    """The job function and arguments that run sweep job ``num`` alone, from a submitted job's (packed or not)."""
    if isinstance(function, PackedJob):
        return function.single(args[0], num)
    return function, tuple(args)


class PackedPoint:
    """One point of a packed job, as the launcher follows it: the submitit job's id, state and end, the point's own
    result (its slot of the job's K) and log files."""

    _sub_jobs = None  # for sesemi.compat.submitit.job_paths: the point's paths are its own

    def __init__(self, job: Any, slot: int, num: int) -> None:
        self.job, self.slot, self.num = job, slot, num

    @property
    def job_id(self) -> str:
        return str(self.job.job_id)

    @property
    def state(self) -> str:
        return str(self.job.state)

    def done(self) -> bool:
        return bool(self.job.done())

    @property
    def paths(self) -> Any:
        from types import SimpleNamespace

        from sesemi.cluster.packing import point_files

        files = point_files(self.job.paths.folder, self.job_id, self.num)
        return SimpleNamespace(stdout=files["stdout"], stderr=files["stderr"])

    def results(self) -> list[Any]:
        return [self.job.results()[0][self.slot]]

    def result(self) -> Any:
        return self.results()[0]


@functools.cache
def _load(payload: str) -> tuple[Any, Any]:
    import cloudpickle

    return cloudpickle.loads(Path(payload).read_bytes())


def shared_job(launcher: Any, singletons: Any, folder: Path) -> SharedJob:
    """Pickle ``launcher`` and the singletons once, into ``folder`` (the sweep dir's submitit folder)."""
    import cloudpickle

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"launch-{uuid.uuid4().hex}.pkl"
    with replacing(path, "wb") as f:
        f.write(cloudpickle.dumps((launcher, singletons)))
    return SharedJob(path)


def submit(
    executor_kind: str,
    job: Callable[..., Any],
    group: list[JobPlan],
    sweep_dir: Path,
    args_of: Callable[[JobPlan], Sequence[Any]],
    code: Snapshot | None = None,
    per_job: int = 1,
) -> None:
    """Submit one group of jobs with equal resources as job arrays: ``job(*args_of(plan))`` for each plan (each plan
    gets its submitit job as ``handle``); with ``per_job`` > 1 (a :class:`PackedJob`), ``job([args_of(plan) for
    each of per_job plans])`` per job, each plan's ``handle`` its :class:`PackedPoint`. On SLURM an array holds at
    most the cluster's ``MaxArraySize`` jobs, and each array waits for room under ``MaxJobCount`` before it is
    submitted."""
    from sesemi.cluster.packing import packs
    from sesemi.compat import submitit as compat_submitit

    units = packs(group, per_job)
    executor = make_executor(executor_kind, group[0].params, sweep_dir, code)
    size = slurm.limits().max_array_size if executor_kind == "slurm" else len(units)
    for start in range(0, len(units), size):
        chunk = units[start : start + size]
        if executor_kind == "slurm":
            _wait_for_room(len(chunk))
            if len(units) > size:
                nums = f"{chunk[0][0].num}-{chunk[-1][-1].num}"
                executor.update_parameters(name=f"{str(group[0].params.get('name')).rsplit('.', 1)[0]}.{nums}")
        if per_job == 1:
            handles = executor.map_array(job, *zip(*(args_of(unit[0]) for unit in chunk)))
        else:
            handles = executor.map_array(job, [[tuple(args_of(p)) for p in unit] for unit in chunk])
        for unit, handle in zip(chunk, handles):
            if executor_kind == "local":
                compat_submitit.report_at_once(handle)
            for slot, plan in enumerate(unit):
                plan.handle = handle if per_job == 1 else PackedPoint(handle, slot, plan.num)


def _wait_for_room(n_jobs: int, poll_s: float = 10.0) -> None:
    """Until SLURM's queue has room for ``n_jobs`` more (``MaxJobCount``; a margin left for others' jobs)."""
    most = slurm.limits().max_job_count
    said = False
    while True:
        queued = slurm.queued_jobs()
        if queued is None or queued + n_jobs <= most * 0.95:
            return
        if not said:
            log.warning(
                "sesemi: SLURM holds %d jobs (MaxJobCount=%d): waiting for room for the next %d", queued, most, n_jobs
            )
            said = True
        time.sleep(poll_s)


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
    if plan.packing.points_per_job > 1:  # the job id is shared by the job's points; each has its own log files
        entry["points_per_job"] = plan.packing.points_per_job
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
