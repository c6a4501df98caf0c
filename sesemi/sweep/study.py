"""The study bookkeeping shared by the sweeper, its workers and the report.

Budget: ``n_trials`` counts every trial of the study, old ones included, except a trial that was retried (its retry
stands in for it) and a trial that failed on a configuration error unrelated to the search space (the same error
would end every trial; fixing it and re-running gets the budget back). The sweeper tops the study up to the budget
with *tickets*: waiting trials without parameters. Workers only ever take a waiting
trial (tickets and retries) and never create one, so N workers on several nodes run exactly the budget: the
sampler fills in the parameters when a worker takes the ticket.

Liveness: the process running a trial writes a heartbeat (a user attribute, with any storage) every
``heartbeat_interval`` seconds; a running trial whose heartbeat is older than ``grace_period`` lost its worker
(killed, preempted, out of memory). Whoever notices (any worker before taking a trial, the sweeper while it waits)
marks it FAIL with that reason and enqueues a retry with the same parameters, up to ``max_retries`` times; the
retry is a new trial with its own number and run dir, so nothing is overwritten.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import optuna
import yaml
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import FrozenTrial, TrialState

from sesemi.compat import optuna as compat
from sesemi.sweepdir import SweepDir

log = logging.getLogger(__name__)

# Trial user attributes (Optuna's public per-trial store; the report shows some of them).
HEARTBEAT = "sesemi:heartbeat"
FATAL = "sesemi:fatal"
TRACEBACK = "sesemi:traceback"
TICKET = "sesemi:ticket"
RETRY_HISTORY = "retry_history"
RUN_DIR = "run_dir"
# Study user attributes.
ABORT = "sesemi:abort"
SWEEP = "sesemi:sweep"
COMMANDS = "sesemi:commands"


def retry_history(trial: FrozenTrial) -> list[int]:
    return list(trial.user_attrs.get(RETRY_HISTORY, ()))


def retried_numbers(trials: Iterable[FrozenTrial]) -> set[int]:
    return {n for t in trials for n in retry_history(t)}


def is_ticket(trial: FrozenTrial) -> bool:
    """A waiting trial the sweeper added to fill the budget (its parameters are sampled when a worker takes it)."""
    return trial.state == TrialState.WAITING and bool(trial.user_attrs.get(TICKET))


def add_ticket(study: optuna.Study, user_attrs: dict[str, Any] | None = None) -> None:
    """Add a waiting trial without parameters (not ``enqueue_trial({})``: samplers take an enqueued trial's parameters
    as given, and the grid's refuses one that gives none)."""
    attrs = {TICKET: True, **(user_attrs or {})}
    study.add_trial(optuna.trial.create_trial(state=TrialState.WAITING, user_attrs=attrs))


def counted(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    """The trials that count against the budget."""
    retried = retried_numbers(trials)
    return [t for t in trials if t.number not in retried and not t.user_attrs.get(FATAL)]


def top_up(study: optuna.Study, n_trials: int) -> int:
    """Enqueue tickets until the study holds ``n_trials`` counted trials; returns how many were added."""
    missing = n_trials - len(counted(study.get_trials(deepcopy=False)))
    for _ in range(max(0, missing)):
        add_ticket(study)
    return max(0, missing)


def waiting(study: optuna.Study) -> list[FrozenTrial]:
    return study.get_trials(deepcopy=False, states=(TrialState.WAITING,))


def running(study: optuna.Study) -> list[FrozenTrial]:
    return study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))


def pop_trial(
    study: optuna.Study, sampler_for: Callable[[int], optuna.samplers.BaseSampler] | None = None
) -> optuna.Trial | None:
    """Take the oldest waiting trial (a ticket or a retry) and mark it running; None when there is none.

    ``sampler_for(number)``: the sampler that draws this trial's parameters (see
    :func:`sesemi.sweep.runner.sampler_for_trial`); it is set before the trial object exists, because a trial asks
    the study's sampler for its relative parameters when it is created.
    """
    trial_id = compat.pop_waiting(study)
    if trial_id is None:
        return None
    if sampler_for is not None:
        study.sampler = sampler_for(compat.frozen(study, trial_id).number)
    return optuna.Trial(study, trial_id)


def suggest(trial: optuna.Trial, distributions: Mapping[str, BaseDistribution]) -> dict[str, Any]:
    """Sample (or, for a retry or an enqueued trial, take over) every parameter of the search space."""
    for name, dist in distributions.items():
        if isinstance(dist, FloatDistribution):
            trial.suggest_float(name, dist.low, dist.high, step=dist.step, log=dist.log)
        elif isinstance(dist, IntDistribution):
            trial.suggest_int(name, dist.low, dist.high, step=dist.step, log=dist.log)
        elif isinstance(dist, CategoricalDistribution):
            trial.suggest_categorical(name, dist.choices)
        else:  # every Hydra sweep maps to one of the three
            raise TypeError(f"{name}: unsupported distribution {dist!r}")
    return dict(trial.params)


STOPPED_BEAT = -1.0  # the heartbeat of a trial whose process said it stopped: lost at once


def heartbeat_age(trial: FrozenTrial, now: float | None = None) -> float:
    """Seconds since the trial's process last said it was alive (infinite once it said it stopped)."""
    now = time.time() if now is None else now
    beat = float(trial.user_attrs.get(HEARTBEAT, 0.0))
    if beat == STOPPED_BEAT:
        return float("inf")
    start = trial.datetime_start.timestamp() if trial.datetime_start else now
    return now - max(beat, start)


def retry(study: optuna.Study, trial: FrozenTrial, max_retries: int | None) -> int | None:
    """Enqueue a retry of ``trial`` with the same parameters; returns its number (None: retries used up)."""
    history = [*retry_history(trial), trial.number]
    if max_retries is not None and len(history) > max_retries:
        log.warning("trial %d was lost and will not be retried: %d retries used up", trial.number, max_retries)
        return None
    attrs = {"failed_trial": history[0], RETRY_HISTORY: history}
    if trial.params:
        study.enqueue_trial(dict(trial.params), user_attrs=attrs)
    else:  # lost before its parameters were sampled: a fresh ticket
        add_ticket(study, attrs)
    number = max(t.number for t in waiting(study) if retry_history(t) == history)
    log.warning("trial %d was lost; retried as trial %s", trial.number, number)
    _mark_retried(trial.user_attrs.get(RUN_DIR), number)
    return number


def _mark_retried(run_dir: str | None, number: int) -> None:
    """The lost trial's run dir names its retry (``retried_as``): ``sesemi.status`` shows it ``retried``, not failed."""
    from sesemi.rundir import RunRecord, is_run_dir

    if run_dir and is_run_dir(run_dir):
        with contextlib.suppress(OSError):
            RunRecord(run_dir).update(retried_as=number)


def mark_run_dir_failed(run_dir: str | None, reason: str) -> None:
    """A trial the study gave up on: its run dir must not keep saying ``running``."""
    from sesemi.rundir import LIVE, RunRecord, read_status

    if not run_dir:
        return
    try:
        status = read_status(run_dir)
        if status is not None and status.get("state") in LIVE:
            RunRecord(run_dir).fail(RuntimeError(reason))
    except OSError:
        pass


def fail_trial(study: optuna.Study, trial_id: int, error: str, *, fatal: bool = False, traceback: str = "") -> bool:
    """Record a trial FAIL with its error; False when it was already finished by someone else."""
    try:
        compat.set_trial_attr(study, trial_id, "error", error[:2000])
        if traceback:
            compat.set_trial_attr(study, trial_id, TRACEBACK, traceback[-6000:])
        if fatal:
            compat.set_trial_attr(study, trial_id, FATAL, True)
    except optuna.exceptions.UpdateFinishedTrialError:
        return False
    return compat.finish(study, trial_id, TrialState.FAIL)


def give_up(study: optuna.Study, trial: FrozenTrial, reason: str, max_retries: int | None) -> int | None:
    """Fail a trial whose process is gone (or was stopped), mark its run dir, and retry it; returns the retry's
    number (None: someone else gave it up first, or retries are used up)."""
    if not fail_trial(study, compat.trial_id(trial), reason):
        return None
    mark_run_dir_failed(trial.user_attrs.get(RUN_DIR), reason)
    return retry(study, trial, max_retries)


def reap_stale(study: optuna.Study, grace_period: float, max_retries: int | None) -> list[int]:
    """Fail and retry the running trials that were lost before their training started (no heartbeat for
    ``grace_period``, no run record): nothing of theirs can be continued. Returns their numbers. A lost trial whose
    training started is continued instead (:mod:`sesemi.sweep.continuation`)."""
    from sesemi.rundir import is_run_dir

    reaped = []
    now = time.time()
    for trial in running(study):
        age = heartbeat_age(trial, now)
        run_dir = trial.user_attrs.get(RUN_DIR)
        if age <= grace_period or (run_dir and is_run_dir(run_dir)):
            continue
        reason = f"lost before its training started: no heartbeat for {age:.0f}s"
        if fail_trial(study, compat.trial_id(trial), reason):
            reaped.append(trial.number)
            retry(study, trial, max_retries)
    return reaped


class OthersWaiter:
    """For a process with no trial to take: reap lost trials, and wait while trials run elsewhere.

    Calling it returns True when a trial waits (take it) or after one poll while others still run (one of them may
    turn out lost, and then be continued); False when nothing waits or runs. Which trials it waits for is logged once
    per set.
    """

    def __init__(self, study: optuna.Study, grace_period: float, max_retries: int | None, poll_interval: float) -> None:
        self.study = study
        self.grace_period = grace_period
        self.max_retries = max_retries
        self.poll_interval = poll_interval
        self._waited_for: list[int] | None = None

    def __call__(self) -> bool:
        reap_stale(self.study, self.grace_period, self.max_retries)
        if waiting(self.study):
            return True
        others = [t.number for t in running(self.study)]
        if not others:
            return False
        if others != self._waited_for:
            self._waited_for = others
            log.info(
                "waiting for %d running trial(s) %s (another process's, or lost: continued from its checkpoint after "
                "grace_period=%.0fs)",
                len(others),
                others,
                self.grace_period,
            )
        time.sleep(max(1.0, min(self.poll_interval, self.grace_period / 2)))
        return True


def drop_stale_waiting(study: optuna.Study, keys: set[str]) -> list[int]:
    """Waiting trials (retries, enqueued parameter sets) with parameters outside the sweep's keys: an earlier sweep
    command's search space, e.g. a misspelt key since fixed. They are failed as not counted, so they replay nothing
    and the budget gets their places back; returns their numbers."""
    dropped = []
    for trial in waiting(study):
        unknown = sorted(set(compat.enqueued_params(trial)) - keys)
        if not unknown:
            continue
        reason = f"dropped: its parameters {unknown} are not in this sweep's search space"
        if not fail_trial(study, compat.trial_id(trial), reason, fatal=True):
            continue
        dropped.append(trial.number)
    return dropped


def set_abort(study: optuna.Study, session: str, reason: str) -> None:
    study.set_user_attr(ABORT, {"session": session, "reason": reason})


def abort_reason(study: optuna.Study, session: str) -> str | None:
    abort = study.user_attrs.get(ABORT)
    if abort and abort.get("session") == session:
        return abort.get("reason")
    return None


def session_failures(trials: list[FrozenTrial], session: str) -> list[FrozenTrial]:
    retried = retried_numbers(trials)
    return [
        t
        for t in trials
        if t.state == TrialState.FAIL and t.user_attrs.get("session") == session and t.number not in retried
    ]


def check_failures(study: optuna.Study, session: str, n_trials: int, max_failure_rate: float) -> str | None:
    """The reason to stop the sweep, if any: a fatal configuration error, or too many failed trials."""
    trials = study.get_trials(deepcopy=False)
    failed = session_failures(trials, session)
    fatal = [t for t in failed if t.user_attrs.get(FATAL)]
    if fatal:
        t = fatal[0]
        return (
            f"trial {t.number} failed on a configuration error that every trial would hit: {t.user_attrs.get('error')}"
        )
    allowed = max_failure_rate * n_trials
    if len(failed) > allowed:
        last = failed[-1]
        return (
            f"{len(failed)} trials failed, more than max_failure_rate={max_failure_rate} of n_trials={n_trials} "
            f"allows; last error (trial {last.number}): {last.user_attrs.get('error')}"
        )
    return None


def write_results(
    study: optuna.Study, sweep_dir: str | os.PathLike, study_name: str, aborted: str | None = None
) -> dict[str, Any]:
    """``<sweep dir>/optimization_results.yaml`` (trials per state, the best trial; for several objectives the
    Pareto front), written atomically: the last workers of a detached sweep may write it at the same time. Returns
    what it wrote."""
    trials = study.get_trials(deepcopy=False)
    states: dict[str, int] = {}
    retried = retried_numbers(trials)
    for t in trials:
        name = "RETRIED" if t.number in retried else t.state.name
        states[name] = states.get(name, 0) + 1
    results: dict[str, Any] = {"name": "sesemi-optuna", "study_name": study_name, "trials": states}
    if any(t.state == TrialState.COMPLETE for t in trials) and len(study.directions) > 1:
        results["pareto_front"] = [
            {"trial": t.number, "values": t.values, "params": t.params, "run_dir": t.user_attrs.get(RUN_DIR)}
            for t in study.best_trials
        ]
    elif any(t.state == TrialState.COMPLETE for t in trials):
        best = study.best_trial
        results.update(
            best_trial=best.number,
            best_params=best.params,
            best_value=best.value,
            best_run_dir=best.user_attrs.get(RUN_DIR),
        )
    if aborted:
        results["aborted"] = aborted
    SweepDir(sweep_dir).write_results(yaml.safe_dump(json.loads(json.dumps(results, default=str)), sort_keys=False))
    return results


def record_command(study: optuna.Study, command: dict[str, Any], new_study: bool) -> list[dict[str, Any]]:
    """Append a sweep command's settings (``search_space``, ``fixed``, ...) to the study's list and return the list;
    a command whose search space differs from the previous one's says so. (Other settings cannot change unnoticed:
    :func:`sesemi.sweep.same_settings.check_same_objective` refuses a command whose trials train something else, or
    warns where that was accepted.)"""
    commands = [] if new_study else list(study.user_attrs.get(COMMANDS, []))
    if commands:
        last = commands[-1]
        before, now = last.get("search_space", {}), command.get("search_space", {})
        changes = [
            f"{key}: {before.get(key, '-')} -> {now.get(key, '-')}"
            for key in sorted({*before, *now})
            if before.get(key) != now.get(key)
        ]
        if changes:
            log.warning(
                "this sweep command's search space differs from the study's previous command's (%s); the trials are "
                "kept and the sampler learns from all of them. Each command's settings are in sweep.json "
                "('commands'). Changes: %s",
                last["session"],
                "; ".join(changes),
            )
    commands.append(command)
    study.set_user_attr(COMMANDS, commands)
    return commands
