"""A trial whose training was stopped from outside continues, as the same trial, from its own checkpoint.

Whatever stops a trial's training (a SLURM time limit, ``scontrol requeue``, preemption, ``scancel``, a worker
killed with ``kill -9``, a node lost, Ctrl-C), the trial stays RUNNING in the study with its parameters and its
intermediate values, and its run dir keeps its ``checkpoints/last.ckpt``. It continues there:

- by the **requeued job itself**: SLURM restarts the job, which finds its trial still RUNNING and its run dir
  holding its own attempt, and training continues from the checkpoint (:mod:`sesemi.cluster.signals`);
- or, when nobody restarts it (cancelled, killed, lost), by **whoever takes it over**: the synchronous sweeper in
  its next batch, an asynchronous worker looking for work. A trial is lost when its heartbeat is older than the
  grace period (a run stopped by a signal says so at once); the taker claims the trial's run dir with its lock
  (:class:`~sesemi.rundir.RunLock`), which exactly one process gets and which a dead holder cannot keep, and
  continues with ``run.resume=<trial dir>`` (same run dir, same step count, same TensorBoard curve).

``max_retries`` counts attempts that made no progress (the run's step did not move since the attempt before), not
preemptions: a trial preempted twenty times that trains on each time is never given up. A trial lost before its
training started has nothing to continue: it is failed and retried as a new trial (:func:`study.give_up`). A trial
that fails by itself (an exception in training) is failed, never continued.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial

from sesemi.compat import optuna as compat
from sesemi.rundir import RunLock, is_run_dir, last_checkpoint, read_status
from sesemi.sweep import study as study_lib

log = logging.getLogger("sesemi.sweep")

STOPPED = "sesemi:stopped"  # why the trial's last attempt was stopped from outside
ATTEMPTS = "sesemi:attempts"  # [{"step": the run's step when the attempt started, "worker": ..., "at": time}]


def run_dir_of(trial: FrozenTrial) -> Path | None:
    """The trial's run dir once its training started (it has a record), else None."""
    run_dir = trial.user_attrs.get(study_lib.RUN_DIR)
    return Path(run_dir) if run_dir and is_run_dir(run_dir) else None


def lost(study: optuna.Study, grace_period: float) -> list[FrozenTrial]:
    """RUNNING trials whose training started and whose heartbeat is older than ``grace_period``: to continue."""
    now = time.time()
    return [
        t
        for t in study_lib.running(study)
        if run_dir_of(t) is not None and study_lib.heartbeat_age(t, now) > grace_period
    ]


def stopped(study: optuna.Study, trial_id: int, why: str, *, at_once: bool) -> None:
    """The trial's training was stopped from outside (its record says how); ``at_once``: nobody restarts it, so it
    is lost now (its heartbeat is set to long ago) instead of after the grace period."""
    try:
        compat.set_trial_attr(study, trial_id, STOPPED, why[:500])
        if at_once:
            compat.set_trial_attr(study, trial_id, study_lib.HEARTBEAT, study_lib.STOPPED_BEAT)
    except optuna.exceptions.UpdateFinishedTrialError:
        pass


def claim(study: optuna.Study, trial: FrozenTrial, grace_period: float) -> RunLock | None:
    """Take over a lost trial: its run dir's lock, held by this process until released; None when another process
    has it (or it is no longer lost)."""
    run_dir = run_dir_of(trial)
    if run_dir is None:
        return None
    lock = RunLock(run_dir)
    if not lock.acquire():
        return None
    fresh = compat.frozen(study, compat.trial_id(trial))
    if fresh.state.name != "RUNNING" or study_lib.heartbeat_age(fresh) <= grace_period:
        lock.release()
        return None
    compat.set_trial_attr(study, compat.trial_id(trial), study_lib.HEARTBEAT, time.time())  # taken: not lost
    return lock


def step_of(run_dir: Path) -> int | None:
    """The step the run reached, as its record says (its heartbeat's, or its metrics')."""
    status = read_status(run_dir) or {}
    return (status.get("progress") or {}).get("step")


def begin_attempt(
    study: optuna.Study, trial: FrozenTrial, worker: str, max_retries: int | None, run_dir: Path | None = None
) -> bool:
    """Record an attempt of ``trial`` (in ``run_dir``: the trial's own, or one of its seed repeats'); False (and the
    trial failed) when the last ``max_retries + 1`` attempts that continued a run made no progress: whatever stops
    it stops it before its next checkpoint, and continuing would loop. A first attempt (no record in its run dir
    yet) is counted, never judged."""
    run_dir = run_dir or run_dir_of(trial)
    continued = run_dir is not None and is_run_dir(run_dir)
    entry = {"step": step_of(run_dir) if continued else None, "worker": worker, "continued": continued}
    attempts = [*trial.user_attrs.get(ATTEMPTS, []), {**entry, "run_dir": str(run_dir), "at": time.time()}]
    trial_id = compat.trial_id(trial)
    compat.set_trial_attr(study, trial_id, ATTEMPTS, attempts)
    mine = [a for a in attempts if a.get("continued") and a.get("run_dir") == str(run_dir)]
    if not continued or max_retries is None or len(mine) <= max_retries + 1:
        return True
    recent = [a.get("step") for a in mine[-(max_retries + 2) :]]  # max_retries + 1 attempts that moved nothing
    if len(set(recent)) > 1:
        return True
    reason = (
        f"lost {max_retries + 1} times in a row without progress (stuck at step {recent[-1]}); last stop: "
        f"{trial.user_attrs.get(STOPPED, 'no heartbeat')}"
    )
    study_lib.fail_trial(study, trial_id, reason)
    study_lib.mark_run_dir_failed(str(run_dir), reason)
    log.error("trial %d: %s", trial.number, reason)
    return False


def resume_overrides(trial: FrozenTrial) -> list[str]:
    """What a continuation adds to the trial's overrides: ``run.resume=<its dir>`` once it has a checkpoint (before
    that, the trial starts over in its own dir)."""
    run_dir = run_dir_of(trial)
    return [f"run.resume={run_dir}"] if run_dir is not None and last_checkpoint(run_dir).is_file() else []
