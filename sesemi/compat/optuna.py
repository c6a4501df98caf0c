"""Optuna internals used by sesemi's sweeper (checked against Optuna 5.0), and why no public API does the job.

A sweep's budget is shared by workers on several nodes: the sweeper adds waiting trials (tickets) and a worker may
only *take* one, never create one. ``Study.ask()`` takes a waiting trial but creates a new trial when none waits,
so taking a trial uses the same two steps as ``ask()`` without that fallback. A worker or the sweeper also finishes
*another* process's trial (lost: no heartbeat), which must happen exactly once however many processes notice it:
the storage's compare-and-set on the trial state is the only atomic way, ``Study.tell()`` is not (it reads, then
writes). Trial attributes are written by trial id from threads and processes that hold no ``Trial`` object (the
heartbeat of a queued trial, a lost trial's error). Everything else uses public APIs (``enqueue_trial``,
``tell``, ``set_user_attr``, ``get_trials``).
"""

from __future__ import annotations

from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState


def trial_id(trial: optuna.Trial | FrozenTrial) -> int:
    """The storage's id of a trial (``Trial._trial_id``; numbers are per study, the storage works by id)."""
    return trial._trial_id


def trial_id_of_number(study: optuna.Study, number: int) -> int:
    """A trial job gets its trial's number; the storage wants the id."""
    return study._storage.get_trial_id_from_study_id_trial_number(study._study_id, number)


def frozen(study: optuna.Study, trial_id: int) -> FrozenTrial:
    """One trial fresh from the storage (``get_trials`` reads all of them, and may serve a cached copy)."""
    return study._storage.get_trial(trial_id)


def pop_waiting(study: optuna.Study) -> int | None:
    """Atomically mark the oldest waiting trial RUNNING and return its id; None when none waits (``ask()``'s first
    step, without its fallback of creating a trial)."""
    study._thread_local.cached_all_trials = None  # what ask() does first: read the storage, not a cached copy
    return study._pop_waiting_trial_id()


def finish(study: optuna.Study, trial_id: int, state: TrialState) -> bool:
    """Set a waiting or running trial's final state; False when another process finished it first."""
    try:
        return bool(study._storage.set_trial_state_values(trial_id, state=state))
    except optuna.exceptions.UpdateFinishedTrialError:
        return False


def set_trial_attr(study: optuna.Study, trial_id: int, key: str, value: Any) -> None:
    """A user attribute of a trial this process holds no ``Trial`` object of; raises UpdateFinishedTrialError when
    the trial has finished."""
    study._storage.set_trial_user_attr(trial_id, key, value)


def enqueued_params(trial: FrozenTrial) -> dict[str, Any]:
    """The parameters ``Study.enqueue_trial`` gave a waiting trial (kept under Optuna's ``fixed_params`` system
    attribute; no public accessor)."""
    return dict(trial.system_attrs.get("fixed_params") or {})
