"""What sesemi asks SLURM itself (its command-line tools, never one call per job): every job's state in one ``sacct``
call, the cluster's limits on arrays and jobs (``scontrol show config``), and how many jobs are in the queue."""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass

# States in which SLURM no longer runs a job and will not run it again by itself (REQUEUE_HOLD: held after a
# requeue, until someone releases it).
ENDED = frozenset(
    (
        "COMPLETED",
        "FAILED",
        "CANCELLED",
        "TIMEOUT",
        "OUT_OF_MEMORY",
        "NODE_FAIL",
        "BOOT_FAIL",
        "DEADLINE",
        "PREEMPTED",
        "REVOKED",
        "SPECIAL_EXIT",
        "REQUEUE_HOLD",
    )
)


def sacct_states(job_ids: Iterable[str]) -> dict[str, str]:
    """SLURM states (``COMPLETED``, ``CANCELLED``, ``RUNNING``...) by job id, from one sacct call for all of them.

    A job array still pending as a whole is one record (``123_[0-999%64]``): each of its tasks reads ``PENDING``.
    """
    ids = sorted({str(j) for j in job_ids if j})
    if not ids or shutil.which("sacct") is None:
        return {}
    arrays = sorted({i.split("_")[0] for i in ids})  # one id per array: sacct lists every task of it
    try:
        out = subprocess.run(
            ["sacct", "-X", "-n", "-P", "-o", "JobID,State", "-j", ",".join(arrays)],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
    except (subprocess.SubprocessError, OSError):
        return {}
    wanted = set(ids)
    states: dict[str, str] = {}
    for line in out.splitlines():
        if "|" not in line:
            continue
        job_id, state = (part.strip() for part in line.split("|", 1))
        state = state.split()[0] if state else "UNKNOWN"
        for task in _tasks(job_id):
            if task in wanted:
                states[task] = state
    return states


def _tasks(job_id: str) -> list[str]:
    """The job ids one sacct record stands for: itself, or each task of a pending array range ``123_[0-5,9%2]``."""
    match = re.fullmatch(r"(\d+)_\[([^\]]+)\]", job_id)
    if match is None:
        return [job_id]
    array, spec = match.group(1), match.group(2).split("%")[0]
    tasks = []
    for part in spec.split(","):
        first, _, last = part.partition("-")
        tasks += [f"{array}_{k}" for k in range(int(first), int(last or first) + 1)]
    return tasks


@dataclass(frozen=True)
class Limits:
    max_array_size: int  # array indices run 0 .. max_array_size - 1
    max_job_count: int  # jobs the controller holds at once (every array task counts once it is split off)


@functools.cache
def limits() -> Limits:
    """The cluster's limits (``scontrol show config``; SLURM's defaults when it cannot be asked)."""
    values = {"MaxArraySize": 1001, "MaxJobCount": 10000}
    try:
        out = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        out = ""
    for key in values:
        match = re.search(rf"^{key}\s*=\s*(\d+)", out, re.MULTILINE)
        if match:
            values[key] = int(match.group(1))
    return Limits(values["MaxArraySize"], values["MaxJobCount"])


def queued_jobs() -> int | None:
    """How many jobs (array tasks counted one by one) the controller holds now, all users; None when unknown."""
    try:
        out = subprocess.run(["squeue", "-h", "-r", "-o", "%i"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    return len(out.stdout.split()) if out.returncode == 0 else None
