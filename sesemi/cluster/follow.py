"""After submission: follow every job until the scheduler says it ended, collect the results, print the summary.

For SLURM the end is what ``sacct`` says (one call per poll for all jobs): a job requeued after a failed attempt
already has a result file, which is all submitit's own wait looks at. One failed job never hides the others: each
job's result is collected on its own, and the summary table (also ``summary.md``/``summary.csv`` in the sweep dir)
lists every job with its state and error.
"""

from __future__ import annotations

import os
import signal
import sys
import time

from sesemi.cluster import slurm, summary
from sesemi.cluster.plan import JobPlan
from sesemi.cluster.snapshot import Snapshot
from sesemi.cluster.submission import ledger_entry
from sesemi.compat.hydra import JobReturn, JobStatus, job_error
from sesemi.sweepdir import SweepDir


def follow(plans: list[JobPlan], executor_kind: str) -> None:
    """Return once every job ended (``KeyboardInterrupt`` passes through to the caller).

    SLURM is asked with one ``sacct`` call for all jobs, less often as the wait grows (2 s up to 15 s: the
    controller serves every user's polls). A local job's end is its process's exit status, free to ask: every
    second, so that an asynchronous sweep replaces a dead worker at once."""
    slurm_jobs = executor_kind == "slurm"
    poll_s = 2.0 if slurm_jobs else 1.0
    waiting = list(plans)
    while waiting:
        states = slurm.sacct_states(str(p.handle.job_id) for p in waiting) if slurm_jobs else {}
        waiting = [p for p in waiting if not _ended(p, states.get(str(p.handle.job_id)))]
        if waiting:
            time.sleep(poll_s)
            poll_s = min(poll_s * 1.5, 15.0) if slurm_jobs else poll_s


def _ended(plan: JobPlan, slurm_state: str | None) -> bool:
    if slurm_state is not None:
        return slurm_state in slurm.ENDED
    return bool(plan.handle.done())  # the local executor, or no record in sacct (yet)


def collect(plans: list[JobPlan]) -> tuple[list[JobReturn], dict[int, str]]:
    """Each job's ``JobReturn`` (a job that failed outside its task: a FAILED one carrying the error), and the
    errors by job number."""
    returns: list[JobReturn] = []
    errors: dict[int, str] = {}
    for plan in plans:
        try:
            ret = plan.handle.results()[0]
        except Exception as err:  # noqa: BLE001 - the job failed outside the task: report it, go on
            ret = JobReturn(overrides=plan.overrides, status=JobStatus.FAILED)
            ret.return_value = err
            errors[plan.num] = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        if ret.status == JobStatus.FAILED and plan.num not in errors:
            err = job_error(ret)
            errors[plan.num] = f"{type(err).__name__}: {err}"
        returns.append(ret)
    return returns, errors


def job_states(plans: list[JobPlan], executor_kind: str) -> dict[int, str]:
    """The scheduler's state of each ended job (``sacct`` for SLURM, submitit's for local jobs)."""
    states: dict[int, str] = {}
    if executor_kind == "slurm":
        by_id = slurm.sacct_states(str(p.handle.job_id) for p in plans)
        states = {p.num: by_id[str(p.handle.job_id)] for p in plans if str(p.handle.job_id) in by_id}
    for plan in plans:
        if plan.num not in states:
            try:
                states[plan.num] = str(plan.handle.state)
            except Exception:  # noqa: BLE001 - a state is only shown
                states[plan.num] = "UNKNOWN"
    return states


def summarize(
    sweep: SweepDir,
    plans: list[JobPlan],
    errors: dict[int, str],
    *,
    executor_kind: str,
    profile: str,
    code: Snapshot | None = None,
) -> None:
    """Record the ended jobs in ``jobs.json`` and print (and write) the summary of the whole sweep so far."""
    states = job_states(plans, executor_kind)
    entries = [ledger_entry(p, errors.get(p.num), states.get(p.num), code) for p in plans]
    sweep.record_jobs(entries, executor=executor_kind, profile=profile)
    jobs = sweep.jobs()
    current = {p.num for p in plans}
    earlier: dict[str, str] = {}
    if executor_kind == "slurm":
        earlier = slurm.sacct_states(j["job_id"] for j in jobs if j["num"] not in current)
    rows = [summary.job_row(j, earlier.get(str(j["job_id"])) or j.get("job_state"), j.get("error")) for j in jobs]
    batch = [row for row in rows if row["job"] in current]
    csv_path, md_path = summary.write(sweep, rows)
    more = f" (this batch; all {len(rows)} jobs of the sweep are in it)" if len(rows) > len(batch) else ""
    print(f"\nsesemi: sweep summary{more} ({md_path}, {csv_path.name}):\n{summary.format_table(batch)}", flush=True)


def interrupted(sweep: SweepDir, plans: list[JobPlan], executor_kind: str) -> None:
    """Ctrl-C while waiting: the jobs are not this process's; say so and how to follow or cancel them; exit 130."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut this message short
    ids = sorted({str(p.handle.job_id).split("_")[0] for p in plans})
    where = os.path.relpath(sweep.path)
    if executor_kind == "slurm":
        lines = [
            f"sesemi: interrupted; stopped waiting. The {len(plans)} job(s) keep running on SLURM "
            f"({', '.join(str(p.handle.job_id) for p in plans[:8])}{' ...' if len(plans) > 8 else ''}), "
            f"each in its run dir below {where}.",
            f"  follow them: python -m sesemi.status {where} --wait",
            f"  cancel them: scancel {' '.join(ids)}",
        ]
    else:
        lines = [
            f"sesemi: interrupted; stopped waiting. The {len(plans)} local job(s) run in this terminal's "
            f"process group, so a Ctrl-C there reaches them too; each has its run dir below {where}.",
            f"  their state: python -m sesemi.status {where}",
        ]
    print("\n" + "\n".join(lines), file=sys.stderr, flush=True)
    raise SystemExit(130)
