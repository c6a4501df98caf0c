"""The task function a sweeper gives its launcher: one trial (synchronous mode), a worker's loop over trials
(asynchronous mode), or the plain training run; which one, each job's environment says (``SESEMI_SWEEP_TRIAL`` or
``SESEMI_SWEEP_WORKER``, set through the job's ``hydra.job.env_set``)."""

from __future__ import annotations

import logging
import os
import socket
from typing import Any

import optuna
from omegaconf import DictConfig
from optuna.trial import TrialState

from sesemi.compat import optuna as compat
from sesemi.sweep import stop, trial
from sesemi.sweep.repeats import REPEAT_ENV
from sesemi.sweep.settings import SweepSettings, load_study
from sesemi.sweep.worker import Sweep, run_worker

log = logging.getLogger("sesemi.sweep")

TRIAL_ENV = "SESEMI_SWEEP_TRIAL"
WORKER_ENV = "SESEMI_SWEEP_WORKER"


class SweepTask:
    def __init__(self, task_function: Any, hydra_context: Any, config: DictConfig) -> None:
        self.task_function = task_function
        self.hydra_context = hydra_context
        self.config = config
        self.settings: SweepSettings | None = None  # set by the sweeper once the study is open

    def __call__(self, cfg: DictConfig) -> Any:
        if os.environ.get(WORKER_ENV) is not None:
            assert self.settings is not None
            sweep = Sweep(self.hydra_context, self.config, self.task_function, self.settings)
            return run_worker(sweep, int(os.environ[WORKER_ENV]))
        if os.environ.get(TRIAL_ENV) is not None:
            return self.run_trial_job(cfg, int(os.environ[TRIAL_ENV]))
        return self.task_function(cfg)

    def run_trial_job(self, cfg: DictConfig, number: int) -> float | None:
        """Synchronous mode: the sweeper took the trial and sampled it; this job runs it and tells the result."""
        assert self.settings is not None
        stop.watch()
        study = load_study(self.settings)
        trial_id = compat.trial_id_of_number(study, number)
        state = compat.frozen(study, trial_id).state
        if state != TrialState.RUNNING:
            # A requeued job (SLURM preemption) whose trial was given up meanwhile: its retry runs elsewhere.
            log.warning("trial %d is %s already: this job has nothing to run", number, state.name)
            return None
        return trial.run(
            study,
            optuna.Trial(study, trial_id),
            cfg,
            self.task_function,
            self.settings,
            worker=f"job@{socket.gethostname()}",
            repeat=int(os.environ[REPEAT_ENV]) if os.environ.get(REPEAT_ENV) is not None else None,
        )
