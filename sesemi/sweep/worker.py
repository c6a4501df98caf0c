"""An asynchronous sweep's worker (``SESEMI_SWEEP_WORKER``): take a waiting trial, sample it, run it as a Hydra job
of its own in this process, record the outcome, take the next, until none is left. A stopped or lost trial comes
first: a requeued worker job continues its own, and any worker continues one it can claim
(:mod:`sesemi.sweep.continuation`).

A detached sweep's worker (no sweeper process waits) keeps going while other workers' trials run, since one of
them may turn out lost and be continued, and the last one writes ``optimization_results.yaml``. A worker that got
SIGTERM takes no new trial (:mod:`sesemi.sweep.stop`).
"""

from __future__ import annotations

import functools
import logging
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import optuna
from omegaconf import DictConfig
from optuna.trial import TrialState

from sesemi.cluster.job_runner import HydraJob, error_of, run
from sesemi.compat import optuna as compat
from sesemi.rundir import RunRecord, slurm_job_id
from sesemi.sweep import continuation, repeats, stop, trial
from sesemi.sweep import storage as storage_lib
from sesemi.sweep import study as study_lib
from sesemi.sweep.settings import SweepSettings, load_study, take_trial
from sesemi.sweepdir import trial_subdir

log = logging.getLogger("sesemi.sweep")


@dataclass
class Sweep:
    """What a worker runs its trials with: the sweep's master config and Hydra context, the app's task function."""

    hydra_context: Any
    config: DictConfig
    task_function: Any
    settings: SweepSettings


def run_worker(sweep: Sweep, index: int) -> int:
    """Take trials one after the other until none is waiting; returns how many it ran. The worker's own dir
    (``workers/<session>/w<k>``) gets a record like any job's."""
    from hydra.core.hydra_config import HydraConfig

    settings = sweep.settings
    stop.watch()
    record = RunRecord(HydraConfig.get().runtime.output_dir)
    record.start()
    name = f"w{index}@{socket.gethostname()}:{os.getpid()}"
    try:
        ran = _take_trials(sweep, name)
    except BaseException as err:  # SIGTERM, Ctrl-C: the worker's dir must not say running
        record.fail(err)
        raise
    log.info("worker %s done: %d trials", name, ran)
    record.complete({"worker": name, "trials": ran, "session": settings.session})
    return ran


def _take_trials(sweep: Sweep, name: str) -> int:
    settings = sweep.settings
    study = load_study(settings)
    log.info("worker %s on study %s (%s)", name, settings.study_name, storage_lib.mask(settings.storage))
    ran = 0
    waiter = study_lib.OthersWaiter(study, settings.grace_period, settings.max_retries, settings.poll_interval)
    while True:
        reason = study_lib.abort_reason(study, settings.session)
        if reason:
            log.error("worker %s stops: %s", name, reason)
            break
        if stop.received():
            log.warning("worker %s stops: it got SIGTERM", name)
            break
        if stop.time_is_up():  # the early signal came after a trial's last step: no new trial in this time slot
            log.warning("worker %s: its time slot ends (the time limit's early signal came); requeued", name)
            stop.requeue_job()
            break
        study_lib.reap_stale(study, settings.grace_period, settings.max_retries)
        if _continue_one(sweep, study, name):
            ran += 1
        else:
            taken = take_trial(study, settings)
            if taken is None:
                if settings.detached and waiter():
                    continue
                break
            ran += 1
            taken.set_user_attr("session", settings.session)
            _run_trial(sweep, study, taken, name)
        reason = study_lib.check_failures(study, settings.session, settings.n_trials, settings.max_failure_rate)
        if reason:
            study_lib.set_abort(study, settings.session, reason)
    if settings.detached and not stop.received():  # the sweep ended (or stopped): no sweeper is left to say so
        abort = study_lib.abort_reason(study, settings.session)
        results = study_lib.write_results(study, settings.sweep_dir, settings.study_name, abort)
        log.info("worker %s: the sweep %s: %s", name, f"stopped ({abort})" if abort else "ended", results["trials"])
    return ran


def _continue_one(sweep: Sweep, study: optuna.Study, name: str) -> bool:
    """Continue a stopped or lost trial, if there is one to take: first this job's own (a requeued worker job comes
    back to the trial it was running), then any other whose run dir this worker can claim. True if it ran one."""
    grace = sweep.settings.grace_period
    job = slurm_job_id()
    own = [t for t in study_lib.running(study) if job and t.user_attrs.get("slurm_job_id") == job]
    for frozen, grace_period in [*((t, -1.0) for t in own), *((t, grace) for t in continuation.lost(study, grace))]:
        lock = continuation.claim(study, frozen, grace_period)
        if lock is None:
            continue
        try:
            log.info("worker %s continues trial %d (%s)", name, frozen.number, frozen.user_attrs.get("sesemi:stopped"))
            taken = optuna.Trial(study, compat.trial_id(frozen))
            resume = continuation.resume_overrides(frozen) if sweep.settings.repeats == 1 else []
            _run_trial(sweep, study, taken, name, resume)
        finally:
            lock.release()
        return True
    return False


def _run_trial(sweep: Sweep, study: optuna.Study, taken: optuna.Trial, name: str, extra: Sequence[str] = ()) -> None:
    """Run the trial's runs in this process: itself, or its seed repeats left, one after the other."""
    settings = sweep.settings
    trial_id = compat.trial_id(taken)
    try:
        trial_overrides = [*trial.overrides(settings, taken, sweep.config), *extra]
    except Exception as err:  # noqa: BLE001 - the search space itself is broken: stop the sweep
        study_lib.fail_trial(study, trial_id, f"search space: {trial.describe(err)}", fatal=True)
        study_lib.set_abort(study, settings.session, f"the search space is broken: {trial.describe(err)}")
        return
    frozen = compat.frozen(study, trial_id)
    left = repeats.jobs(
        frozen, trial_overrides, settings.repeats, settings.repeat_base, settings.repeat_key, settings.sweep_dir
    )
    for repeat, job_overrides in left:
        if compat.frozen(study, trial_id).state != TrialState.RUNNING:
            return  # pruned or failed on an earlier seed
        task = functools.partial(
            trial.run, study, taken, task_function=sweep.task_function, settings=settings, worker=name, repeat=repeat
        )
        job = HydraJob(sweep.hydra_context, sweep.config, task, job_overrides, taken.number, trial_subdir(taken.number))
        try:
            config = job.compose()
        except Exception as err:  # noqa: BLE001 - a sampled value the config cannot take
            study_lib.fail_trial(study, trial_id, f"config: {trial.describe(err)}")
            log.error("trial %d: its config could not be composed: %s", taken.number, err)
            return
        error = error_of(run(job, keep_logging=True, config=config))
        if error and compat.frozen(study, trial_id).state == TrialState.RUNNING:  # it failed outside trial.run
            study_lib.fail_trial(study, trial_id, error)
            return
