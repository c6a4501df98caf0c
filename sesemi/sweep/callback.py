"""The Lightning callback a sweep adds to each trial: report, prune, and end its TensorBoard HParams session.

At every validation it reports ``run.objective`` to the Optuna trial (step = optimizer step) and asks the study's
pruner whether to stop; a pruned trial stops training as a run that reached its end does (``trainer.should_stop``:
its checkpoints, ``metrics.json`` and ``status.json`` are written as usual, no traceback), and the runner records it
PRUNED. A ``run.objective`` that was never logged is a :class:`~sesemi.errors.ConfigError` at the first validation of
the first trial, and a NaN objective fails the trial right away. The run's logger puts its config (the sampled
parameters among the keys) on TensorBoard's HParams dashboard, so ``tensorboard --logdir <sweep dir>`` shows all
trials of a sweep side by side; this callback writes the session's status when training ends (success, or failure
for a pruned or crashed trial; a killed trial keeps none).

The trial runner (:mod:`sesemi.sweep.trial`) creates the callback for its trial and hands it to training through
the app's task function, which adds it to the run's :class:`~sesemi.runtime.Runtime`; nothing of it is in the
trial's config, so a trial's saved config re-runs as a plain run.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import pytorch_lightning as pl

from sesemi.callbacks.objective import objective_candidates
from sesemi.compat import optuna as compat
from sesemi.errors import ConfigError
from sesemi.sweep import pareto, repeats, stop

log = logging.getLogger(__name__)


@dataclass
class TrialContext:
    """What the callback needs from the runner: the Optuna trial (of a study with its pruner) and the metric (or,
    in a study of several objectives, ``monitors``: one metric per objective, the first being ``monitor``)."""

    trial: Any
    monitor: str
    params: dict[str, Any] = field(default_factory=dict)
    monitors: list[str] = field(default_factory=list)
    repeat: int | None = None  # which of the trial's seed repeats this run is (sesemi.sweep.repeats)
    repeats: int = 1
    reports: int = 0
    last_step: int | None = None
    last_value: float | None = None
    pruned: str | None = None  # why the pruner stopped it


def _hparam_value(value: Any) -> Any:
    return value if isinstance(value, (bool, int, float, str)) else str(value)


def _write_hparams(trainer: pl.Trainer, summaries: list[Any]) -> None:
    from pytorch_lightning.loggers import TensorBoardLogger

    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            # torch's SummaryWriter.add_hparams would open a second run dir; the summaries go to the run's own file.
            writer = logger.experiment.file_writer
            if writer is None:  # closed already
                continue
            for summary in summaries:
                writer.add_summary(summary)
            writer.flush()


class OptunaTrialCallback(pl.Callback):
    def __init__(self, context: TrialContext) -> None:
        self.context = context

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.global_rank == 0:
            self._end_session(trainer, "STATUS_FAILURE" if self.context.pruned else "STATUS_SUCCESS")

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if trainer.global_rank == 0:
            self._end_session(trainer, "STATUS_FAILURE")

    def _end_session(self, trainer: pl.Trainer, status: str) -> None:
        from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
        from tensorboard.plugins.hparams.api_pb2 import Status
        from tensorboard.plugins.hparams.metadata import PLUGIN_DATA_VERSION, PLUGIN_NAME, SESSION_END_INFO_TAG
        from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData, SessionEndInfo

        content = HParamsPluginData(
            session_end_info=SessionEndInfo(status=Status.Value(status)), version=PLUGIN_DATA_VERSION
        )
        metadata = SummaryMetadata(
            plugin_data=SummaryMetadata.PluginData(plugin_name=PLUGIN_NAME, content=content.SerializeToString())
        )
        _write_hparams(trainer, [Summary(value=[Summary.Value(tag=SESSION_END_INFO_TAG, metadata=metadata)])])

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, idx: int) -> None:
        stop.watch()  # after Lightning and the preemption callback installed their SIGTERM handlers

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        monitors = self.context.monitors or [self.context.monitor]
        missing = [m for m in monitors if m not in trainer.callback_metrics]
        if missing:
            logged = objective_candidates(trainer.callback_metrics)
            key = "run.objectives" if self.context.monitors else "run.objective"
            raise ConfigError(
                key,
                f"{missing[0]!r} is not logged by this run; its validation metrics are {logged}",
                f"set {key} to {'some' if self.context.monitors else 'one'} of them, e.g. in the hparams_search config",
            )
        values = [float(trainer.callback_metrics[m]) for m in monitors]
        step = trainer.global_step
        bad = [(m, v) for m, v in zip(monitors, values) if not math.isfinite(v)]
        if bad:
            raise FloatingPointError(f"{bad[0][0]} is {bad[0][1]} at step {step}")
        if trainer.global_rank != 0:
            return
        trial = self.context.trial
        if self.context.repeat is not None:
            # The trial's intermediate value is the mean over its seeds once all reached this step; a trial pruned
            # on another seed's report stops this seed too.
            trial_id = compat.trial_id(trial)
            stopped = repeats.pruned(trial.study, trial_id)
            if stopped:
                self.context.pruned = stopped
                trainer.should_stop = True
                return
            mean = repeats.report_step(trial.study, trial_id, self.context.repeat, self.context.repeats, step, values)
            if mean is None:
                return
            values = mean
        if len(values) == 1:
            trial.report(values[0], step)
        else:
            pareto.report_vector(trial, step, values)  # Optuna's report takes one value
        self.context.reports += 1
        self.context.last_step, self.context.last_value = step, values[0]
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
        if pareto.should_prune(trial):
            shown = ", ".join(f"{m} = {v:.4f}" for m, v in zip(monitors, values))
            mean = " (mean over its seeds)" if self.context.repeat is not None else ""
            self.context.pruned = f"pruned at step {step} with {shown}{mean}"
            log.info("trial %d: %s", trial.number, self.context.pruned)
            if self.context.repeat is not None:
                repeats.mark_pruned(trial.study, compat.trial_id(trial), self.context.pruned)
            trainer.should_stop = True
