"""The state of every job of a sweep (or of any run dirs), for ``python -m sesemi.status``.

One row per job from what the job itself keeps in its run dir (``status.json``: state, restarts, and while it
trains the ``progress`` the :class:`~sesemi.callbacks.Heartbeat` callback writes) and SLURM's state of the job
(one ``sacct`` call for all jobs). The launcher's ``jobs.json`` maps sweep points to job ids and run dirs; run dirs
without one (local runs, sweeps of Hydra's basic launcher) get a row of their own without a job id. The run dirs
of a sweep dir that ``jobs.json`` does not list are the trials its asynchronous workers ran (``trial_NNNN``): a row
each, with its parameters and the SLURM job of the worker that ran it.

Deliberately free of torch/Lightning/Hydra imports: ``sesemi.status`` over hundreds of run dirs answers in well
under a second.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sesemi.cluster.slurm import ENDED, sacct_states
from sesemi.rundir import (
    FINAL,
    HEARTBEAT_STALE_S,
    HYDRA_DIR,
    LIVE,
    STATUS_FILE,
    RunState,
    last_heartbeat,
    read_metrics,
    read_status,
)
from sesemi.sweepdir import SweepDir

STALE_S = HEARTBEAT_STALE_S  # a heartbeat older than this (and no SLURM job running it): the process is gone
ERROR_CHARS = 300  # of a failed run's error, cut at a word boundary


@dataclass
class JobRow:
    run_dir: Path
    num: int | None = None
    job_id: str = ""
    point: str = ""
    slurm: str = ""
    state: str = ""
    step: int | None = None
    max_steps: int | None = None
    objective: float | None = None
    elapsed_s: float | None = None
    eta_s: float | None = None
    restarts: int = 0
    error: str = ""
    stderr: str = ""
    entry: dict[str, Any] = field(default_factory=dict, repr=False)
    label: str = ""  # the run dir below the folder asked about (``default/20260101_120000``), when not a sweep's job

    @property
    def name(self) -> str:
        if self.label:
            return self.label
        return str(self.num) if self.num is not None else self.run_dir.name


def _time(text: str | None) -> datetime | None:
    try:
        return datetime.fromisoformat(text) if text else None
    except ValueError:
        return None


def _point(overrides: Iterable[str]) -> list[str]:
    return [str(o) for o in overrides if not str(o).lstrip("+~").startswith("hydra.")]


def read_overrides(run_dir: str | os.PathLike) -> list[str]:
    """The command line's overrides of a run, as Hydra recorded them (``.hydra/overrides.yaml``); [] without."""
    import yaml

    try:
        overrides = yaml.safe_load((Path(run_dir) / HYDRA_DIR / "overrides.yaml").read_text()) or []
    except (OSError, yaml.YAMLError):
        return []
    return [str(o) for o in overrides] if isinstance(overrides, list) else []


@dataclass
class Source:
    """Where the jobs are: sweep dirs (with ``jobs.json``) and lone run dirs."""

    sweeps: list[Path]
    run_dirs: list[Path]


def find(path: str | os.PathLike) -> Source:
    """A sweep dir, a run dir (inside a sweep dir or not) or a dir of runs, e.g. ``runs/``."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such directory")
    if SweepDir(path).is_sweep():
        return Source([path], [])
    if (path / STATUS_FILE).is_file():
        return Source([], [path])
    sweeps = sorted(p.parent for p in path.rglob(SweepDir(path).jobs_file.name))
    covered = {d for s in sweeps for d in SweepDir(s).listed_run_dirs()}
    covered |= {d.resolve() for s in sweeps for d in worker_trials(s)}
    lone = sorted(p.parent for p in path.rglob(STATUS_FILE) if p.parent.resolve() not in covered)
    if not sweeps and not lone:
        raise FileNotFoundError(f"{path}: no sweep dir (jobs.json) or run dir (status.json) below it")
    return Source(sweeps, lone)


def worker_trials(sweep: Path) -> list[Path]:
    """The run dirs directly below a sweep dir that its ``jobs.json`` does not list: trials run by workers."""
    return SweepDir(sweep).unlisted_run_dirs(STATUS_FILE)


def _trial_entry(run_dir: Path, jobs: dict[str, str]) -> dict[str, Any]:
    """A worker's trial as a job entry: its overrides (Hydra's record) and the job of the worker that ran it
    (``ran_in``; not ``job_id``: the trial is no job of its own, ``--resubmit`` leaves it to the workers).

    ``jobs``: the sweep's job ids by the SLURM job id their attempts recorded (:func:`sesemi.rundir.slurm_job_id`).
    """
    attempts = (read_status(run_dir) or {}).get("attempts") or [{}]
    slurm_id = str(attempts[-1].get("slurm_job_id") or "")
    return {"run_dir": str(run_dir), "overrides": read_overrides(run_dir), "ran_in": jobs.get(slurm_id, slurm_id)}


def _jobs_by_slurm_id(jobs: list[dict[str, Any]]) -> dict[str, str]:
    ids = {}
    for job in jobs:
        for attempt in (read_status(job["run_dir"]) or {}).get("attempts") or []:
            if attempt.get("slurm_job_id") and job.get("job_id"):
                ids[str(attempt["slurm_job_id"])] = str(job["job_id"])
    return ids


def job_entries(source: Source) -> list[tuple[Path | None, dict[str, Any], str]]:
    """(sweep dir, jobs.json entry, executor) per job; a sweep's workers' trials and lone run dirs (a local grid's
    jobs, a local Optuna sweep's trials, single runs: their overrides from Hydra's record) as entries of their own."""
    entries: list[tuple[Path | None, dict[str, Any], str]] = []
    for sweep in source.sweeps:
        data = SweepDir(sweep).read_jobs() or {}
        entries.extend((sweep, job, str(data.get("executor"))) for job in data.get("jobs", []))
        trials = worker_trials(sweep)
        jobs = _jobs_by_slurm_id(data.get("jobs", [])) if trials else {}
        entries.extend((sweep, _trial_entry(d, jobs), str(data.get("executor"))) for d in trials)
    entries.extend(
        (None, {"run_dir": str(run_dir), "overrides": read_overrides(run_dir)}, "") for run_dir in source.run_dirs
    )
    return entries


def derive_state(status: dict[str, Any] | None, slurm: str, now: datetime, stale_s: float = STALE_S) -> RunState:
    """The run's state as a user needs it: the run's own record, corrected by what SLURM and the heartbeat say.

    A record never claims a live run by itself: the writer may have been unable to write its end (``kill -9``, a
    full disk). One that says running (or requeued) stays so only while SLURM runs (or holds) its job, or, without
    a scheduler to ask, while its process is alive on this host, or, on another host, while its heartbeat is
    fresh; otherwise it is ``lost``.
    """
    state = (status or {}).get("state")
    slurm_ended = slurm in ENDED
    if (status or {}).get("retried_as") is not None and state != RunState.COMPLETED:
        return RunState.RETRIED
    if state in (None, ""):
        if slurm_ended:
            return RunState.CANCELLED if slurm == "CANCELLED" else RunState.MISSING  # never started training
        return RunState.PENDING
    if state in LIVE:
        if slurm in ("PENDING", "REQUEUED"):
            return RunState.REQUEUED  # waits for its next start (the attempt before may not have said so)
        if slurm_ended:
            return RunState.CANCELLED if slurm == "CANCELLED" else RunState.LOST
        if slurm:
            return RunState(state)  # SLURM runs it: slow perhaps, not lost
        alive = _process_alive(status)
        if alive is not None:
            return RunState(state) if alive else RunState.LOST
        beat = last_heartbeat(status)
        if beat is None or (now - beat).total_seconds() > stale_s:
            return RunState.LOST  # no scheduler to ask, and the process stopped beating (or never did)
    return RunState(state)


def _process_alive(status: dict[str, Any] | None) -> bool | None:
    """Whether the process of the attempt the record names still runs: None when this host cannot tell (another
    host's, a SLURM job's, no pid). A pid the kernel gave to a newer process (started after the attempt) is not it."""
    attempt = ((status or {}).get("attempts") or [{}])[-1]
    if attempt.get("host") != socket.gethostname() or attempt.get("slurm_job_id"):
        return None
    try:
        pid = int(attempt.get("pid"))
        os.kill(pid, 0)
    except (TypeError, ValueError, ProcessLookupError):
        return False if attempt.get("pid") is not None else None
    except PermissionError:
        pass  # alive, someone else's
    started, began = _time(attempt.get("started")), _process_start(pid)
    return not (started and began and began > started.timestamp() + 2)


def _process_start(pid: int) -> float | None:
    """When process ``pid`` started (Unix time, Linux's /proc), or None."""
    try:
        ticks = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
        boot = next(
            int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines() if line.startswith("btime")
        )
    except (OSError, ValueError, IndexError, StopIteration):
        return None
    return boot + ticks / os.sysconf("SC_CLK_TCK")


def row_of(sweep: Path | None, entry: dict[str, Any], slurm: str, now: datetime, stale_s: float = STALE_S) -> JobRow:
    run_dir = Path(entry["run_dir"])
    status = read_status(run_dir)
    row = JobRow(
        run_dir=run_dir,
        num=entry.get("num"),
        job_id=str(entry.get("job_id") or entry.get("ran_in") or ""),
        point=" ".join(_point(entry.get("overrides") or [])),
        slurm=slurm,
        stderr=str(entry.get("stderr") or ""),
        entry=entry,
    )
    attempts = (status or {}).get("attempts") or []
    submitted = _time(entry.get("submitted"))
    last_start = _time(attempts[-1].get("started")) if attempts else None
    if submitted and last_start and last_start < submitted:
        # The record is an earlier job's (before --resubmit): this job has not started training yet.
        row.state = derive_state(None, slurm, now, stale_s)
    else:
        row.state = derive_state(status, slurm, now, stale_s)
    if status is None:
        return row
    progress = status.get("progress") or {}
    row.restarts = int(status.get("restarts") or 0)
    row.step, row.max_steps = progress.get("step"), progress.get("max_steps")
    row.objective = progress.get("objective")
    row.error = shorten(str(status.get("error") or entry.get("error") or ""), ERROR_CHARS)
    started = _time(attempts[0].get("started")) if attempts else None
    ended = _time(status.get("ended")) if row.state in FINAL else None
    if started is not None:
        row.elapsed_s = ((ended or now) - started).total_seconds()
    rate = progress.get("steps_per_s")
    if row.state == RunState.RUNNING and rate and row.max_steps and row.step is not None:
        row.eta_s = max(0.0, (row.max_steps - row.step) / rate)
    if row.state == RunState.COMPLETED:
        metrics = read_metrics(run_dir) or {}
        row.objective = (metrics.get("objective") or {}).get("value", row.objective)
        row.step = metrics.get("global_step", row.step)
    return row


def shorten(text: str, width: int) -> str:
    """``text`` on one line, at most ``width`` characters: cut at a word boundary, `` ...`` marking what was left
    out (a first word longer than that is cut inside it, ``...`` right after)."""
    text = " ".join(text.split())
    if len(text) <= width:
        return text
    head = text[: width - 3]
    if " " not in head:
        return head + "..."
    return head[: head.rindex(" ")].rstrip(" ,;:") + " ..."


def collect(path: str | os.PathLike, *, use_sacct: bool = True, stale_s: float = STALE_S) -> list[JobRow]:
    """A row per job below ``path``. Jobs of the sweep ``path`` names are in its order (job numbers, then trials);
    below any other folder (``runs/``, a local grid's sweep dir) every run is named by its dir below ``path``
    (``default/20260101_120000``, ``grid/20260101_120000/3``) and the rows are sorted by those names."""
    root = Path(path)
    entries = job_entries(find(root))

    def job_of(entry: dict[str, Any]) -> str:
        return str(entry.get("job_id") or entry.get("ran_in") or "")

    ids = [job_of(e) for _, e, executor in entries if job_of(e) and executor == "slurm"]
    states = sacct_states(ids) if use_sacct and ids else {}
    now = datetime.now(timezone.utc)
    rows = [row_of(s, e, states.get(job_of(e), ""), now, stale_s) for s, e, _ in entries]
    _keep_what_differs(rows, entries)
    if not SweepDir(root).is_sweep():
        for row in rows:
            row.label = _below(row.run_dir, root)
        rows.sort(key=lambda r: _natural(r.label))
    return rows


def _below(run_dir: Path, root: Path) -> str:
    try:
        relative = run_dir.resolve().relative_to(root.resolve())
    except ValueError:
        return str(run_dir)
    return run_dir.name if relative == Path(".") else relative.as_posix()


def _natural(text: str) -> list[Any]:
    """Sort key: numbers by value (job 10 after job 9), the rest as text."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def _keep_what_differs(rows: list[JobRow], entries: list[tuple[Path | None, dict[str, Any], str]]) -> None:
    """A point is what differs between the jobs of its sweep (or between the run dirs of one folder: a local
    grid's jobs, a local Optuna sweep's trials, the runs of one ``run.id``): overrides all of them share are left
    out. A run alone in its folder keeps all its overrides."""
    groups: dict[Path, list[int]] = {}
    for i, (sweep, entry, _) in enumerate(entries):
        groups.setdefault(sweep if sweep is not None else Path(entry["run_dir"]).parent, []).append(i)
    for folder, indices in groups.items():
        points = {i: _point(entries[i][1].get("overrides") or []) for i in indices}
        swept = _swept_keys(folder)
        if swept:  # an Optuna sweep's trial: its parameters, even where two trials drew the same value
            for i in indices:
                rows[i].point = " ".join(o for o in points[i] if o.lstrip("+~").split("=", 1)[0] in swept)
            continue
        if len(indices) < 2:
            continue
        common = set.intersection(*(set(p) for p in points.values()))
        for i in indices:
            rows[i].point = " ".join(o for o in points[i] if o not in common)


def _swept_keys(folder: Path) -> set[str]:
    """The keys an Optuna sweep in ``folder`` searched (every command's search space, from its ``sweep.json``)."""
    commands = (SweepDir(folder).read_sweep() or {}).get("commands") or []
    return {key.lstrip("+~") for c in commands if isinstance(c, dict) for key in c.get("search_space") or {}}


def ended(row: JobRow) -> bool:
    """The job will not change by itself any more: its run ended and SLURM (if it ran there) let go of it."""
    return row.state in FINAL and (not row.slurm or row.slurm in ENDED)
