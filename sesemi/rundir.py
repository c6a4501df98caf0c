"""What a run dir is: its layout, how a path given by a user resolves to a run dir or a checkpoint, and its record.

A run dir (``${run.dir}/${run.id}/<stamp>``, or ``<sweep dir>/<job num>``) holds::

    .hydra/                 the composed config (Hydra)
    status.json             running / completed / failed / requeued / cancelled / interrupted; every attempt
    metrics.json            written once, when the run completed
    checkpoints/last.ckpt   the newest training state (resume, requeue)
    checkpoints/best.ckpt   the best one by run.objective
    events.out.tfevents.*   TensorBoard's curves, one file per attempt (sesemi.loggers)
    hparams.yaml            the run's config, flattened, as hyperparameters
    loggers.json            the run ids of MLflow / W&B, so a restart continues the same run
    .lock                   held by the process that trains in the run dir

Only global rank zero writes the record. A run is ``completed`` only after its metrics were written, so a crashed
or killed run never looks finished; each (re)start of the same run dir is appended to ``status.json``'s
``attempts``. Every file is written to a temporary file in the same dir and renamed, so a reader never sees half
of one. This module imports neither torch nor Lightning (the cluster summary reads run dirs too).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import socket
import traceback
from collections.abc import Sequence
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import Any, ClassVar

from sesemi.atomic import read_json, write_json
from sesemi.errors import ConfigError

STATUS_FILE = "status.json"
METRICS_FILE = "metrics.json"
HYDRA_DIR = ".hydra"
CHECKPOINT_DIR = "checkpoints"
LAST_CKPT = "last.ckpt"
BEST_CKPT = "best.ckpt"
LOCK_FILE = ".lock"
LOGGERS_FILE = "loggers.json"  # the MLflow / W&B run ids of the run (sesemi.loggers), so a restart continues them

# Which checkpoint a run dir stands for: training continues from the newest state; inference prefers the best.
RESUME = (LAST_CKPT,)
INFERENCE = (BEST_CKPT, LAST_CKPT)

PathLike = str | os.PathLike


class RunState(str, Enum):
    """The one vocabulary of run states: ``status.json``'s ``state``, ``sesemi.status``'s table, the sweeps."""

    # Written by the run itself.
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    REQUEUED = "requeued"  # stopped by SLURM (time limit, preemption, requeue): the requeued job continues it
    CANCELLED = "cancelled"  # SIGTERM (kill, scancel): checkpoint saved, resumable
    INTERRUPTED = "interrupted"  # Ctrl-C: checkpoint saved, resumable
    # Written by a sweep into its trial's record.
    PRUNED = "pruned"
    # Derived by readers (sesemi.status) from the record, the scheduler and the heartbeat; never written.
    PENDING = "pending"  # its job has not started training yet
    LOST = "lost"  # says running, but its process is gone
    MISSING = "missing"  # its job ended before it started training
    RETRIED = "retried"  # a sweep trial that was lost and whose retry stands in for it

    def __str__(self) -> str:
        return self.value


# The job will not change by itself any more.
FINAL = frozenset(
    {
        RunState.COMPLETED,
        RunState.PRUNED,
        RunState.RETRIED,
        RunState.FAILED,
        RunState.CANCELLED,
        RunState.LOST,
        RunState.MISSING,
    }
)
# Ended without its result: someone has to look (and may ``--resubmit``).
ATTENTION = frozenset({RunState.FAILED, RunState.CANCELLED, RunState.LOST, RunState.MISSING})
# Ended as a sweep wants: trained, stopped by the pruner, or stood in for by its retry.
DONE = frozenset({RunState.COMPLETED, RunState.PRUNED, RunState.RETRIED})
# The run's process may still be at work on it.
LIVE = frozenset({RunState.RUNNING, RunState.REQUEUED})


def _env_rank() -> int:
    """The global rank from the environment, as Lightning reads it (RANK, LOCAL_RANK, SLURM_PROCID...)."""
    for key in ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK"):
        if os.environ.get(key) is not None:
            return int(os.environ[key])
    return 0


def rank_zero_only(fn: Any) -> Any:
    """lightning_utilities' ``rank_zero_only``, looked up when the method is called: importing it at module level
    cost every start of the app (``--help``, each TAB of shell completion) ~0.1 s. The rank is set the way Lightning
    sets it on import (a value already set is kept), for processes that mark run dirs without Lightning (the cluster
    summary, a sweep's reaper)."""

    @functools.wraps(fn)
    def on_rank_zero(*args: Any, **kwargs: Any) -> Any:
        from lightning_utilities.core.rank_zero import rank_zero_only as lightning_rank_zero_only

        lightning_rank_zero_only.rank = getattr(lightning_rank_zero_only, "rank", _env_rank())
        return fn(*args, **kwargs) if lightning_rank_zero_only.rank == 0 else None

    return on_rank_zero


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# A running run's heartbeat (sesemi.callbacks.Heartbeat, every few seconds) older than this: its process is gone.
HEARTBEAT_STALE_S = 180.0


def last_heartbeat(status: dict[str, Any] | None) -> datetime | None:
    """When the run last said it was alive: its heartbeat, else the last status update."""
    status = status or {}
    for text in ((status.get("progress") or {}).get("heartbeat"), status.get("updated")):
        try:
            if text:
                return datetime.fromisoformat(text)
        except ValueError:
            continue
    return None


def read_status(run_dir: PathLike) -> dict[str, Any] | None:
    """``status.json`` of a run dir, or None when there is none (yet)."""
    return read_json(Path(run_dir) / STATUS_FILE)


def read_metrics(run_dir: PathLike) -> dict[str, Any] | None:
    """``metrics.json`` of a run dir, or None before the run completed."""
    return read_json(Path(run_dir) / METRICS_FILE)


def state_of(run_dir: PathLike) -> RunState | None:
    """The state a run dir's record says (None: no record yet)."""
    state = (read_status(run_dir) or {}).get("state")
    return RunState(state) if state else None


def is_run_dir(path: PathLike) -> bool:
    return (Path(path) / STATUS_FILE).is_file()


def find_run_dir(path: PathLike) -> Path | None:
    """The run dir that holds ``path`` (a checkpoint, a file in it, or the run dir itself), if any."""
    path = Path(os.path.expanduser(str(path))).absolute()
    for candidate in (path, *path.parents):
        if is_run_dir(candidate):
            return candidate
    return None


def checkpoint_dir(run_dir: PathLike) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR


def last_checkpoint(run_dir: PathLike) -> Path:
    """Where a run dir's newest training state is (whether it exists yet or not)."""
    return checkpoint_dir(run_dir) / LAST_CKPT


def checkpoint_in(directory: PathLike, names: Sequence[str] = INFERENCE) -> Path | None:
    """The first of ``names`` found in ``directory/checkpoints/`` (a run dir) or in ``directory`` itself."""
    directory = Path(directory)
    for name in names:
        for candidate in (directory / CHECKPOINT_DIR / name, directory / name):
            if candidate.is_file():
                return candidate
    return None


def resolve_checkpoint(path: PathLike | None, key: str, names: Sequence[str] = RESUME) -> Path:
    """A checkpoint file given by a user at config key ``key``; a directory stands for the first of ``names`` in it.

    Raises :class:`ConfigError` (naming ``key``) when nothing is there.
    """
    if not path:
        raise ConfigError(key, "is not set", f"give {key}=<a .ckpt file or a run dir>")
    p = Path(os.path.expanduser(str(path)))
    wanted = " or ".join(f"{CHECKPOINT_DIR}/{n}" for n in names)
    if p.is_dir():
        found = checkpoint_in(p, names)
        if found is None:
            raise ConfigError(key, f"{p} is a directory without {wanted}", "give a .ckpt file or a sesemi run dir")
        return found
    if not p.is_file():
        raise ConfigError(key, f"no checkpoint at {p}", f"give a .ckpt file or a run dir with {wanted}")
    return p


def run_dir_of_checkpoint(checkpoint: PathLike) -> Path:
    """The run dir a checkpoint belongs to (the one with ``status.json``), else the folder above ``checkpoints/``."""
    path = Path(checkpoint).absolute()
    found = find_run_dir(path)
    if found is not None:
        return found
    return path.parent.parent if path.parent.name == CHECKPOINT_DIR else path.parent


def best_checkpoint(run_dir: PathLike) -> str | None:
    """The run's best checkpoint as its metrics name it, else ``best.ckpt``/``last.ckpt`` in it, else None."""
    best = (read_metrics(run_dir) or {}).get("best_checkpoint")
    if best:
        return str(best)
    found = checkpoint_in(run_dir, INFERENCE)
    return str(found) if found else None


def objective_value(metrics: dict[str, Any]) -> float | None:
    """The objective a ``metrics.json`` records: ``run.objective`` of a fit, the ``*/acc`` of a validate/test run."""
    if metrics.get("objective"):
        value = metrics["objective"].get("value")
        return None if value is None else float(value)
    results = metrics.get(metrics.get("mode") or "") or {}
    return next((float(v) for k, v in results.items() if k.endswith("/acc")), None)


def read_objective(run_dir: PathLike) -> float | None:
    """The objective of a completed run dir, or None."""
    metrics = read_metrics(run_dir)
    return None if metrics is None else objective_value(metrics)


def slurm_job_id() -> str | None:
    """This process's SLURM job as ``scancel``/``scontrol`` name it alone (None outside SLURM).

    An array task is ``<array job id>_<task id>``, not its ``$SLURM_JOB_ID``: one task's raw id equals the array's
    id, and ``scontrol requeue <that id>`` requeues every task of the array.
    """
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"{array}_{task}" if array and task else os.environ.get("SLURM_JOB_ID")


class RunRecord:
    """Writes the status and metrics files of one run dir (on global rank zero only)."""

    def __init__(self, run_dir: PathLike) -> None:
        self.dir = Path(run_dir)
        self.status_path = self.dir / STATUS_FILE
        self.metrics_path = self.dir / METRICS_FILE

    @rank_zero_only
    def update(self, **fields: Any) -> None:
        """Set ``fields`` in ``status.json`` (other fields kept) and stamp ``updated``."""
        status = read_status(self.dir) or {"attempts": []}
        status.update(fields)
        status["updated"] = _now()
        write_json(self.status_path, status)

    @rank_zero_only
    def start(self) -> None:
        """Mark the run as running; a run dir that already had a status is a restart (requeue or resume)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        previous = read_status(self.dir)
        attempts = previous["attempts"] if previous else []
        attempts.append(
            {
                "started": _now(),
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "slurm_job_id": slurm_job_id(),
                "previous_state": previous["state"] if previous else None,
            }
        )
        self.update(
            state=RunState.RUNNING.value, attempts=attempts, restarts=len(attempts) - 1, error=None, signal=None
        )

    @rank_zero_only
    def note_attempt(self, **fields: Any) -> None:
        """Add ``fields`` to the current (last) attempt, e.g. ``resumed_from``."""
        status = read_status(self.dir) or {}
        attempts = status.get("attempts") or [{}]
        attempts[-1].update(fields)
        self.update(attempts=attempts)

    @rank_zero_only
    def complete(self, metrics: dict[str, Any]) -> None:
        write_json(self.metrics_path, metrics)
        self.update(state=RunState.COMPLETED.value, ended=_now())

    @rank_zero_only
    def fail(self, error: BaseException) -> None:
        """A failed run: the error, its traceback, and a configuration error's key, problem and fix (so that whoever
        reads the record, e.g. a sweep, can tell a bad value from a crash)."""
        config_error = None
        if isinstance(error, ConfigError):
            config_error = {"key": error.key, "problem": error.problem, "fix": error.fix}
        self.update(
            state=RunState.FAILED.value,
            ended=_now(),
            error=f"{type(error).__name__}: {error}",
            config_error=config_error,
            traceback="".join(traceback.format_exception(error))[-8000:],
        )

    @rank_zero_only
    def requeued(self, reason: str, signal_name: str | None = None) -> None:
        self.update(state=RunState.REQUEUED.value, requeue_reason=reason, signal=signal_name)

    @rank_zero_only
    def stopped(self, state: RunState, signal_name: str, reason: str) -> None:
        """A run ended by a signal, resumable (``cancelled``: scancel; ``interrupted``: Ctrl-C)."""
        self.update(state=RunState(state).value, signal=signal_name, stop_reason=reason, ended=_now())


class RunLock:
    """Exclusive use of a run dir by one training process (global rank zero) for as long as it trains there.

    ``status.json`` says ``running`` for a live run and for one killed without a word (``kill -9``): reading it and
    then starting is check-then-act, and two resumes started together both trained into one dir. An ``flock`` on
    ``<run dir>/.lock`` is taken atomically and released by the kernel when its process dies however it dies, so
    exactly one process gets it (on NFS, Linux maps ``flock`` to the server's byte-range locks). Within a process
    the lock is re-entrant: a sweep worker that claims a lost trial's dir hands it on to the run it trains there.
    """

    _held: ClassVar[dict[Path, list[int]]] = {}  # this process's locks: path -> [fd, holders]

    def __init__(self, run_dir: PathLike) -> None:
        self.path = (Path(run_dir) / LOCK_FILE).absolute()
        self._mine = False

    def acquire(self) -> bool:
        """Take the lock without waiting; False when another process holds it."""
        held = RunLock._held.get(self.path)
        if held is not None:
            held[1] += 1
        else:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return False
            RunLock._held[self.path] = [fd, 1]
        self._mine = True
        return True

    @classmethod
    def _drop_in_child(cls) -> None:
        """In a forked child (a DataLoader worker): close its copies of the lock's fds, without unlocking. An flock
        lasts until the last copy of its fd closes, so a worker that outlives a ``kill -9`` of its trainer by the
        seconds its watchdog takes would otherwise keep the run dir locked against the resume."""
        for fd, _ in cls._held.values():
            with contextlib.suppress(OSError):
                os.close(fd)
        cls._held.clear()

    def release(self) -> None:
        held = RunLock._held.get(self.path)
        if not self._mine or held is None:
            return
        self._mine = False
        held[1] -= 1
        if held[1] == 0:
            del RunLock._held[self.path]
            with contextlib.suppress(OSError):
                fcntl.flock(held[0], fcntl.LOCK_UN)
                os.close(held[0])


os.register_at_fork(after_in_child=RunLock._drop_in_child)
