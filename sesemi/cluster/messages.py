"""What a launch prints: the plan of a dry run, the submitted jobs, and how to follow a detached sweep."""

from __future__ import annotations

import logging
import os
import shlex
from pathlib import Path

from sesemi.cluster.packing import Packing
from sesemi.cluster.plan import JobPlan
from sesemi.cluster.submission import job_files, sbatch_script
from sesemi.compat.hydra import filter_overrides
from sesemi.sweepdir import JOBS_FILE

log = logging.getLogger("sesemi.cluster")


def dry_run_text(executor_kind: str, sweep_dir: Path, groups: list[list[JobPlan]]) -> str:
    """The jobs, their resources and sbatch script, each job's overrides and run dir; nothing is submitted."""
    n_points = sum(len(g) for g in groups)
    n_jobs = sum(_n_jobs(g) for g in groups)
    packed = f"{n_points} sweep points as " if n_jobs != n_points else ""
    lines = [
        f"sesemi dry run: {packed}{n_jobs} job(s) in {len(groups)} submission(s) to {executor_kind}; "
        "nothing submitted.",
        f"sweep dir: {sweep_dir}",
    ]
    for i, group in enumerate(groups, 1):
        params = group[0].params
        k = group[0].packing.points_per_job
        kind = "job array" if _n_jobs(group) > 1 else "job"
        lines.append("")
        per_job = f", {k} points per job" if k > 1 else ""
        lines.append(
            f"== submission {i}/{len(groups)}: {kind} of {_n_jobs(group)}{per_job} "
            f"(sweep jobs {[p.num for p in group]}) =="
        )
        shown = {k: v for k, v in sorted(params.items()) if v not in (None, [], {}) or k == "partition"}
        lines.append("resources: " + " ".join(f"{k}={v}" for k, v in shown.items()))
        if k > 1:
            lines.append(f"packing: {_packing_text(group[0].packing)}")
        script = sbatch_script(executor_kind, params, sweep_dir, _n_jobs(group))
        if script:
            lines.append("sbatch script:")
            lines.extend(f"    {line}" for line in script.rstrip().splitlines())
        lines.append("jobs:")
        for n, plan in enumerate(group):
            if k > 1 and n % k == 0:
                lines.append(f"  array job {n // k}: sweep jobs {[p.num for p in group[n : n + k]]}")
            task = " ".join(shlex.quote(o) for o in filter_overrides(plan.overrides))
            lines.append(f"  #{plan.num}: {task or '(no overrides)'}")
            lines.append(f"      run dir: {plan.run_dir}")
            lines.append(f"      config as: python -m sesemi.train {task}".rstrip())
    return "\n".join(lines) + "\n"


def _n_jobs(group: list[JobPlan]) -> int:
    k = group[0].packing.points_per_job
    return -(-len(group) // k)


def _packing_text(packing: Packing) -> str:
    threads = packing.threads if packing.threads is not None else "the job's CPUs / points"
    return (
        f"points_per_job={packing.points_per_job} (one process each) point_gpus={packing.gpus} point_threads={threads}"
    )


def announce(executor_kind: str, sweep_dir: Path, plans: list[JobPlan]) -> None:
    job_ids = list(dict.fromkeys(str(p.handle.job_id) for p in plans))
    ids = ", ".join(job_ids[:8]) + (" ..." if len(job_ids) > 8 else "")
    folder = Path(job_files(plans[0])["stdout"]).parent.parent
    log.info(
        f"sesemi: submitted {_jobs_text(plans)} [{ids}] ({executor_kind}); run dirs {run_dirs_text(plans)}; "
        f"job logs {folder}/<job id>/. Waiting for them; Ctrl-C here leaves them running, and "
        f"`python -m sesemi.status {os.path.relpath(sweep_dir)}` tells their state at any time."
    )


def run_dirs_text(plans: list[JobPlan]) -> str:
    """The jobs' run dirs as they are (a sweeper may name them, e.g. ``trial_0007`` or ``workers/<session>/w0``)."""
    if all(p.run_dir.name == str(p.num) for p in plans):
        return f"{plans[0].run_dir.parent}/<job num>"
    shown = ", ".join(os.path.relpath(p.run_dir) for p in plans[:4])
    return shown + (f" and {len(plans) - 4} more" if len(plans) > 4 else "")


def announce_detached(executor_kind: str, sweep_dir: Path, plans: list[JobPlan]) -> None:
    where = os.path.relpath(sweep_dir)
    job_ids = list(dict.fromkeys(str(p.handle.job_id) for p in plans))
    ids = ", ".join(job_ids[:8])
    ids += f" and {len(job_ids) - 8} more" if len(job_ids) > 8 else ""
    print(
        f"sesemi: submitted {_jobs_text(plans)} to {executor_kind}: {ids}; not waiting "
        "(hydra.launcher.wait=false).\n"
        f"  jobs, run dirs and logs: {where}/{JOBS_FILE}\n"
        f"  follow them:   python -m sesemi.status {where} --wait\n"
        f"  resubmit what failed: python -m sesemi.status {where} --resubmit",
        flush=True,
    )


def _jobs_text(plans: list[JobPlan]) -> str:
    """``N job(s)``, or ``P point(s) in N job(s)`` when jobs hold several points."""
    n_jobs = len({str(p.handle.job_id) for p in plans})
    return f"{n_jobs} job(s)" if n_jobs == len(plans) else f"{len(plans)} point(s) in {n_jobs} job(s)"
