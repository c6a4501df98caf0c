"""The asynchronous sweep: ``workers`` worker jobs through the launcher, each taking the next trial as soon as its
last one ended (:mod:`sesemi.sweep.worker`), a worker that ended while trials wait replaced at once
(:mod:`sesemi.sweep.workers`). Detached (``hydra.launcher.wait=false`` on SLURM), the workers are submitted as one job
array and this process returns: the workers then run the whole budget themselves."""

from __future__ import annotations

import logging
import os

import optuna

from sesemi.sweep import study as study_lib
from sesemi.sweep.launching import SweepLaunch
from sesemi.sweep.progress import Progress
from sesemi.sweep.settings import SweepSettings
from sesemi.sweep.task import WORKER_ENV
from sesemi.sweep.workers import WorkerPool
from sesemi.sweepdir import worker_subdir

log = logging.getLogger("sesemi.sweep")


def worker_overrides(settings: SweepSettings, index: int) -> list[str]:
    return [
        *(f"{key}={value}" for key, value in settings.fixed_params.items()),
        *settings.fixed_overrides,
        f"hydra.sweep.subdir={worker_subdir(settings.session, index)}",
        f"++hydra.job.env_set.{WORKER_ENV}={index}",
    ]


def run(
    study: optuna.Study, settings: SweepSettings, launch: SweepLaunch, *, workers: int, objective: str, dry_run: bool
) -> None:
    slots = min(workers, len(study_lib.waiting(study)))
    if dry_run:  # the launcher's plan of the first workers; it ends the command
        launch([worker_overrides(settings, k) for k in range(max(1, slots))], 0)
        return
    log.info("%d worker(s) for %d waiting trial(s)", slots, len(study_lib.waiting(study)))
    pool = WorkerPool(
        study,
        settings.session,
        slots,
        launch=lambda index: launch([worker_overrides(settings, index)], index)[0],
        worker_dir=lambda index: os.path.join(settings.sweep_dir, worker_subdir(settings.session, index)),
        poll_interval=settings.poll_interval,
        grace_period=settings.grace_period,
        max_retries=settings.max_retries,
    )
    with Progress(study, objective, settings.poll_interval, settings.grace_period, settings.max_retries):
        pool.run()


def detach(study: optuna.Study, settings: SweepSettings, launch: SweepLaunch, *, workers: int, budget: int) -> None:
    """Submit the workers as one job array and return: each worker takes trials, reaps lost ones and stops when
    none waits or runs, so the budget needs nobody on this side."""
    slots = min(workers, len(study_lib.waiting(study)))
    if not slots:
        log.info("nothing to submit: no trial of the budget (n_trials=%d) waits", budget)
        return
    launch([worker_overrides(settings, k) for k in range(slots)], 0)
    print(f"  the study so far: python -m sesemi.sweep_report {os.path.relpath(settings.sweep_dir)}", flush=True)
