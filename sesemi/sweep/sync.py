"""The synchronous sweep: batches of ``n_jobs`` trials, each launched as a job of its own, the next batch sampled from
the results of all finished trials (as Hydra's own Optuna sweeper does, but resumable and failure tolerant). A
batch first continues the trials that were stopped or lost (:mod:`sesemi.sweep.continuation`), then samples new
ones."""

from __future__ import annotations

import logging
from pathlib import Path

import optuna

from sesemi.compat import optuna as compat
from sesemi.rundir import RunState, read_status
from sesemi.sweep import continuation, repeats, trial
from sesemi.sweep import study as study_lib
from sesemi.sweep.heartbeat import Heartbeat
from sesemi.sweep.launching import SweepLaunch
from sesemi.sweep.progress import Progress
from sesemi.sweep.settings import SweepSettings, take_trial
from sesemi.sweep.task import TRIAL_ENV
from sesemi.sweepdir import trial_subdir

log = logging.getLogger("sesemi.sweep")


def run(
    study: optuna.Study,
    settings: SweepSettings,
    launch: SweepLaunch,
    config: object,
    *,
    n_jobs: int,
    objective: str,
    dry_run: bool,
    check_abort: object,
) -> None:
    """Until the budget ran (or the sweep was aborted: ``check_abort()`` raises)."""
    sweep_dir = settings.sweep_dir
    waiter = study_lib.OthersWaiter(study, settings.grace_period, settings.max_retries, settings.poll_interval)
    while True:
        check_abort()  # type: ignore[operator]
        study_lib.reap_stale(study, settings.grace_period, settings.max_retries)
        batch = _continuations(study, settings, config, n_jobs)
        batch += _sample_batch(study, settings, config, n_jobs - len(batch), check_abort)
        if not batch:
            if dry_run or not waiter():
                return
            continue
        for taken, _ in batch:
            if continuation.run_dir_of(compat.frozen(study, compat.trial_id(taken))) is None:
                taken.set_user_attr(study_lib.RUN_DIR, f"{sweep_dir}/{trial_subdir(taken.number)}")
        # A trial's runs: one, or one per seed repeat left (launched together, in parallel where the launcher can).
        runs = [(taken, job) for taken, overrides in batch for job in _runs(study, settings, taken, overrides)]
        # The sweeper beats for its trials while they wait in a queue; the trial jobs beat too once they run.
        beating = [compat.trial_id(t) for t, _ in batch]
        progress = Progress(study, objective, settings.poll_interval, settings.grace_period, settings.max_retries)
        with Heartbeat(study, beating, settings.heartbeat_interval), progress:
            errors = launch([job for _, job in runs], batch[0][0].number)
        by_trial: dict[int, list[str | None]] = {}
        for (taken, _), error in zip(runs, errors):
            by_trial.setdefault(taken.number, []).append(error)
        for taken, _ in batch:
            _settle(study, settings, taken, by_trial.get(taken.number, [None]))


def _runs(study: optuna.Study, settings: SweepSettings, taken: optuna.Trial, overrides: list[str]) -> list[list[str]]:
    frozen = compat.frozen(study, compat.trial_id(taken))
    left = repeats.jobs(
        frozen, overrides, settings.repeats, settings.repeat_base, settings.repeat_key, settings.sweep_dir
    )
    return [[*job, *([] if k is None else [f"++hydra.job.env_set.{repeats.REPEAT_ENV}={k}"])] for k, job in left]


def _continuations(
    study: optuna.Study, settings: SweepSettings, config: object, n_jobs: int
) -> list[tuple[optuna.Trial, list[str]]]:
    """Lost trials whose training started: each continues as the same trial from its checkpoint."""
    batch: list[tuple[optuna.Trial, list[str]]] = []
    for frozen in continuation.lost(study, settings.grace_period)[:n_jobs]:
        lock = continuation.claim(study, frozen, settings.grace_period)
        if lock is None:
            continue  # another process continues it
        lock.release()  # the trial's job takes the run dir's lock itself
        taken = optuna.Trial(study, compat.trial_id(frozen))
        log.info("trial %d continues in its run dir (%s)", frozen.number, frozen.user_attrs.get(continuation.STOPPED))
        overrides = trial.overrides(settings, taken, config)  # type: ignore[arg-type]
        if settings.repeats == 1:  # seed repeats: each its own dir, continued by sesemi.sweep.repeats.jobs
            overrides += continuation.resume_overrides(frozen)
        batch.append((taken, [*overrides, f"++hydra.job.env_set.{TRIAL_ENV}={taken.number}"]))
    return batch


def _sample_batch(
    study: optuna.Study, settings: SweepSettings, config: object, n_jobs: int, check_abort: object
) -> list[tuple[optuna.Trial, list[str]]]:
    batch: list[tuple[optuna.Trial, list[str]]] = []
    while len(batch) < n_jobs:
        taken = take_trial(study, settings)
        if taken is None:
            break
        taken.set_user_attr("session", settings.session)
        try:
            overrides = trial.overrides(settings, taken, config)  # type: ignore[arg-type]
        except Exception as err:  # noqa: BLE001 - the search space itself is broken: stop
            study_lib.fail_trial(study, compat.trial_id(taken), f"search space: {trial.describe(err)}", fatal=True)
            check_abort()  # type: ignore[operator]
            continue
        batch.append((taken, [*overrides, f"++hydra.job.env_set.{TRIAL_ENV}={taken.number}"]))
    return batch


def _settle(study: optuna.Study, settings: SweepSettings, taken: optuna.Trial, errors: list[str | None]) -> None:
    """A trial whose jobs ended without recording its outcome: stopped or lost (continued in the next batch; retried
    when its training had not started) or failed outside the trial."""
    frozen = compat.frozen(study, compat.trial_id(taken))
    if frozen.state.name != "RUNNING":
        return
    error = next((e for e in errors if e and not e.startswith("lost")), None) or next((e for e in errors if e), None)
    if error is None or error.startswith("lost"):
        why = error or "lost: the trial job ended without recording a result"
        run_dir = continuation.run_dir_of(frozen)
        if run_dir is None:
            study_lib.give_up(study, frozen, why, settings.max_retries)
        else:
            continuation.stopped(study, compat.trial_id(taken), _stop_reason(run_dir) or why, at_once=True)
    else:
        study_lib.fail_trial(study, compat.trial_id(taken), error)
        study_lib.mark_run_dir_failed(frozen.user_attrs.get(study_lib.RUN_DIR), error)


def _stop_reason(run_dir: Path) -> str | None:
    """Why the run's last attempt stopped, in its own words (``SIGTERM at step 8 (scancel ...)``), when a signal
    stopped it: better than what the launcher saw (a cancelled job without result); None for a run killed without
    a word."""
    status = read_status(run_dir) or {}
    if status.get("state") in (RunState.CANCELLED, RunState.INTERRUPTED, RunState.REQUEUED):
        return status.get("stop_reason") or status.get("requeue_reason")
    return None
