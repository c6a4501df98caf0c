"""What a sweep dir is: the one owner of its file names and the writer of its records.

A sweep dir (``hydra.sweep.dir``; an Optuna sweep's is fixed by ``hydra.sweeper.dir`` so that the same command
resumes it) holds::

    multirun.yaml              the sweep's config (Hydra)
    jobs.json                  every job a sesemi launcher submitted: its point, job id, run dir, logs, resources
    summary.md, summary.csv    one row per job, when an attached sweep ends (python -m sesemi.cluster.summary)
    sweep.json                 an Optuna sweep: its study, storage, objective, every command that ran it
    optuna.journal             an Optuna sweep's study (the default storage)
    optimization_results.yaml  an Optuna sweep's outcome: trials per state, the best trial
    <num>/                     the run dir of grid job <num> (hydra.sweep.subdir)
    trial_NNNN/                the run dir of Optuna trial NNNN
    workers/<session>/w<k>/    an asynchronous sweep's worker k (a record of its own; its trials are trial_NNNN)
    .submitit/<job id>/        the jobs' stdout/stderr and submitit's pickles
    .code/<digest>/            the code and configs the jobs run, copied at submission (sesemi.cluster.snapshot)

Every record is written whole (:mod:`sesemi.atomic`); ``jobs.json`` is read, merged and written under a lock, since
an asynchronous sweep launches its workers from several threads.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sesemi.atomic import read_json, write_json, write_text

JOBS_FILE = "jobs.json"
SWEEP_FILE = "sweep.json"
RESULTS_FILE = "optimization_results.yaml"
SUMMARY_MD = "summary.md"
SUMMARY_CSV = "summary.csv"
GROUPED_FILE = "summary_over.md"
JOURNAL_FILE = "optuna.journal"
MULTIRUN_FILE = "multirun.yaml"
WORKERS_DIR = "workers"
BASELINE_DIR = "baseline"  # an Optuna sweep's baseline run (hydra.sweeper.baseline)
TRIAL_PREFIX = "trial_"
SUBMITIT_DIR = ".submitit"  # the default of hydra.launcher.submitit_folder (.submitit/%j), and local sweep jobs
CODE_DIR = ".code"  # hidden, so that a snapshot of a folder holding sweeps never copies another

PathLike = str | os.PathLike

_JOBS_LOCK = threading.RLock()


def trial_subdir(number: int) -> str:
    """An Optuna trial's run dir below the sweep dir."""
    return f"{TRIAL_PREFIX}{number:04d}"


def trial_number(run_dir: PathLike) -> int | None:
    """The trial number of a trial's run dir, None for other dirs."""
    name = Path(run_dir).name
    if name.startswith(TRIAL_PREFIX) and name[len(TRIAL_PREFIX) :].isdigit():
        return int(name[len(TRIAL_PREFIX) :])
    return None


def worker_subdir(session: str, index: int) -> str:
    """Worker ``index`` of an asynchronous sweep's command ``session`` (numbers never reused in a session)."""
    return f"{WORKERS_DIR}/{session}/w{index}"


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class SweepDir:
    def __init__(self, path: PathLike) -> None:
        self.path = Path(path)

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    @property
    def jobs_file(self) -> Path:
        return self.path / JOBS_FILE

    @property
    def journal(self) -> Path:
        return self.path / JOURNAL_FILE

    def is_sweep(self) -> bool:
        return self.jobs_file.is_file()

    # ------------------------------------------------------------------------------------------------- jobs.json
    def read_jobs(self) -> dict[str, Any] | None:
        """``jobs.json`` (``executor``, ``profile``, ``sweep_dir``, ``launch_dir``, ``jobs``), None when absent."""
        return read_json(self.jobs_file)

    def jobs(self) -> list[dict[str, Any]]:
        return (self.read_jobs() or {}).get("jobs", [])

    def record_jobs(self, entries: Iterable[Mapping[str, Any]], *, executor: str, profile: str) -> None:
        """Merge job entries (by job ``num``) into ``jobs.json``: an entry given again replaces the old one, keeping
        its first ``submitted`` time and ``previous_job_ids``, to which the old job id is added when the point runs
        as another job now (a synchronous sweep's trial continued by a job of the next batch). A sweeper that
        launches several batches (or workers from several threads) adds to one file."""
        with _JOBS_LOCK:
            previous = {j["num"]: j for j in self.jobs()}
            merged = dict(previous)
            for entry in entries:
                job = dict(entry)
                earlier = previous.get(job["num"], {})
                job.setdefault("submitted", earlier.get("submitted", now()))
                if "previous_job_ids" in earlier and "previous_job_ids" not in job:
                    job["previous_job_ids"] = earlier["previous_job_ids"]
                old_id = earlier.get("job_id")
                if old_id and job.get("job_id") and old_id != job["job_id"]:
                    ids = list(job.get("previous_job_ids") or [])
                    job["previous_job_ids"] = ids if old_id in ids else [*ids, old_id]
                merged[job["num"]] = job
            self.write_jobs(executor=executor, profile=profile, jobs=list(merged.values()))

    def write_jobs(self, *, executor: str, profile: str, jobs: list[dict[str, Any]], launch_dir: str = "") -> None:
        with _JOBS_LOCK:
            write_json(
                self.jobs_file,
                {
                    "executor": executor,
                    "profile": profile,
                    "sweep_dir": str(self.path),
                    "launch_dir": launch_dir or (self.read_jobs() or {}).get("launch_dir") or os.getcwd(),
                    "jobs": sorted(jobs, key=lambda j: j["num"]),
                },
            )

    def listed_run_dirs(self) -> set[Path]:
        return {Path(j["run_dir"]).resolve() for j in self.jobs()}

    def unlisted_run_dirs(self, status_file: str) -> list[Path]:
        """Run dirs directly below the sweep dir that ``jobs.json`` does not list: trials its workers ran."""
        listed = self.listed_run_dirs()
        return sorted(p.parent for p in self.path.glob(f"*/{status_file}") if p.parent.resolve() not in listed)

    # -------------------------------------------------------------------------------------------- other records
    def write_sweep(self, info: Mapping[str, Any]) -> None:
        write_json(self.path / SWEEP_FILE, dict(info))

    def read_sweep(self) -> dict[str, Any] | None:
        return read_json(self.path / SWEEP_FILE)

    def write_results(self, yaml_text: str) -> Path:
        path = self.path / RESULTS_FILE
        write_text(path, yaml_text)
        return path

    def write_summary(self, markdown: str, csv_text: str) -> tuple[Path, Path]:
        md, csv = self.path / SUMMARY_MD, self.path / SUMMARY_CSV
        write_text(csv, csv_text)
        write_text(md, markdown)
        return csv, md

    def write_grouped(self, markdown: str) -> Path:
        path = self.path / GROUPED_FILE
        write_text(path, markdown)
        return path

    def discard_if_empty(self, stop: PathLike) -> None:
        """Remove the sweep dir (and its empty parents up to ``stop``) when it holds nothing but Hydra's
        ``multirun.yaml``: a dry run or a refused sweep leaves no sweep dir behind."""
        if not self.path.is_dir() or any(p.name != MULTIRUN_FILE for p in self.path.iterdir()):
            return
        (self.path / MULTIRUN_FILE).unlink(missing_ok=True)
        stop_at = Path(stop).absolute()
        path = self.path
        while path != stop_at and stop_at in path.parents:
            try:
                path.rmdir()
            except OSError:
                break
            path = path.parent
