"""The Lightning callback a sweep adds to each trial: report, prune, and log the trial's hyperparameters.

At every validation it reports ``run.objective`` to the Optuna trial (step = optimizer step) and asks the study's
pruner whether to stop; a pruned trial ends with :class:`optuna.TrialPruned`. A ``run.objective`` that was never
logged is a :class:`~sesemi.errors.ConfigError` at the first validation of the first trial, and a NaN objective
fails the trial right away. On fit start the trial's sampled parameters go to TensorBoard's HParams dashboard, so
``tensorboard --logdir <sweep dir>`` shows all trials of a sweep side by side.

The callback takes its trial from the sweep runner (:func:`active_trial`); outside a sweep it does nothing, so a
trial's saved config can be re-run as a plain run.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import pytorch_lightning as pl

from sesemi.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass
class TrialContext:
    """What the callback needs from the runner: the Optuna trial (of a study with its pruner) and the metric."""

    trial: Any
    monitor: str
    params: dict[str, Any] = field(default_factory=dict)
    reports: int = 0
    last_step: int | None = None
    last_value: float | None = None


_ACTIVE: TrialContext | None = None


def active_trial() -> TrialContext | None:
    return _ACTIVE


def set_active_trial(context: TrialContext | None) -> None:
    global _ACTIVE
    _ACTIVE = context


def _hparam_value(value: Any) -> Any:
    return value if isinstance(value, (bool, int, float, str)) else str(value)


class OptunaTrialCallback(pl.Callback):
    def __init__(self) -> None:
        self.context = active_trial()

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.context is None or trainer.global_rank != 0:
            return
        from pytorch_lightning.loggers import TensorBoardLogger

        params = {"trial": self.context.trial.number, **{k: _hparam_value(v) for k, v in self.context.params.items()}}
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                from torch.utils.tensorboard.summary import hparams

                # Only the HParams summaries: the metric's values are the scalars the run logs anyway.
                writer = logger.experiment._get_file_writer()
                for summary in hparams(params, {self.context.monitor: 0.0}):
                    writer.add_summary(summary)
                writer.flush()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.context is None or trainer.sanity_checking:
            return
        monitor = self.context.monitor
        if monitor not in trainer.callback_metrics:
            logged = sorted(k for k in trainer.callback_metrics if not k.startswith(("train/", "lr-")))
            raise ConfigError(
                "run.objective",
                f"{monitor!r} is not logged by this run; its validation metrics are {logged}",
                "set run.objective (and run.objective_mode) to one of them, e.g. in the hparams_search config",
            )
        value = float(trainer.callback_metrics[monitor])
        step = trainer.global_step
        if not math.isfinite(value):
            raise FloatingPointError(f"{monitor} is {value} at step {step}")
        if trainer.global_rank != 0:
            return
        trial = self.context.trial
        trial.report(value, step)
        self.context.reports += 1
        self.context.last_step, self.context.last_value = step, value
        if trainer.world_size > 1:
            # The other ranks of a multi-process trial may not run this callback (Lightning's own DDP launcher
            # re-runs the command line), so a decision taken here could not reach them: such trials only report.
            if self.context.reports == 1:
                log.warning(
                    "trial %d runs on %d processes: it reports but is not pruned", trial.number, trainer.world_size
                )
            return
        if 0 < trainer.max_steps <= step:
            return  # the trial has finished its training: it completes, a verdict now would only hide its result
        if trial.should_prune():
            import optuna

            raise optuna.TrialPruned(f"pruned at step {step} with {monitor} = {value:.4f}")
