"""The synchronous sweep: batches of ``n_jobs`` trials, each launched as a job of its own, the next batch sampled from
the results of all finished trials (as Hydra's own Optuna sweeper does, but resumable and failure tolerant). A
batch first continues the trials that were stopped or lost (:mod:`sesemi.sweep.continuation`), then samples new
ones."""

from __future__ import annotations

import optuna

from sesemi.compat import optuna as compat
from sesemi.sweep import continuation, trial
from sesemi.sweep import study as study_lib
from sesemi.sweep.launching import SweepLaunch
from sesemi.sweep.progress import Progress
from sesemi.sweep.settings import SweepSettings, take_trial
from sesemi.sweep.task import TRIAL_ENV
from sesemi.sweepdir import trial_subdir


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
            taken.set_user_attr(study_lib.RUN_DIR, f"{sweep_dir}/{trial_subdir(taken.number)}")
        # The sweeper beats for its trials while they wait in a queue; the trial jobs beat too once they run.
        beating = [compat.trial_id(t) for t, _ in batch]
        progress = Progress(study, objective, settings.poll_interval, settings.grace_period, settings.max_retries)
        with study_lib.Heartbeat(study, beating, settings.heartbeat_interval), progress:
            errors = launch([o for _, o in batch], batch[0][0].number)
        for (taken, _), error in zip(batch, errors):
            _settle(study, settings, taken, error)


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
        overrides = [*trial.overrides(settings, taken, config), *continuation.resume_overrides(frozen)]  # type: ignore[arg-type]
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


def _settle(study: optuna.Study, settings: SweepSettings, taken: optuna.Trial, error: str | None) -> None:
    """A trial whose job ended without recording an outcome: stopped or lost (continued in the next batch; retried
    when its training had not started) or failed outside the trial."""
    frozen = compat.frozen(study, compat.trial_id(taken))
    if frozen.state.name != "RUNNING":
        return
    if error is None or error.startswith("lost"):
        why = error or "lost: the trial job ended without recording a result"
        if continuation.run_dir_of(frozen) is None:
            study_lib.give_up(study, frozen, why, settings.max_retries)
        else:
            continuation.stopped(study, compat.trial_id(taken), why, at_once=True)
    else:
        study_lib.fail_trial(study, compat.trial_id(taken), error)
        study_lib.mark_run_dir_failed(frozen.user_attrs.get(study_lib.RUN_DIR), error)
