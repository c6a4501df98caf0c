"""Keeps a running job's progress in its ``status.json``: step, max_steps, the latest objective and a heartbeat time.

``python -m sesemi.status`` reads it to show step / max_steps, ETA and the objective while jobs run, and to tell a
job that still runs from one that was lost (no fresh heartbeat, and SLURM no longer runs it). Written by global
rank zero at most every ``every_s`` seconds (one small atomic file write), never per step.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any

import pytorch_lightning as pl

from sesemi.rundir import RunRecord


class Heartbeat(pl.Callback):
    def __init__(self, run_dir: str, objective: str = "val/acc", every_s: float = 10.0) -> None:
        self.run_dir = run_dir
        self.objective = objective
        self.every_s = float(every_s)
        self._last = 0.0
        self._start: tuple[float, int] | None = None  # (time, step) when this attempt started training

    def _beat(self, trainer: pl.Trainer, force: bool = False) -> None:
        now = time.monotonic()
        if not trainer.is_global_zero or (not force and now - self._last < self.every_s):
            return
        self._last = now
        progress: dict[str, Any] = {
            "step": trainer.global_step,
            "max_steps": trainer.max_steps if trainer.max_steps and trainer.max_steps > 0 else None,
            "heartbeat": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        if self._start is None:
            self._start = (now, trainer.global_step)
        elif trainer.global_step > self._start[1]:
            progress["steps_per_s"] = round((trainer.global_step - self._start[1]) / (now - self._start[0]), 4)
        value = trainer.callback_metrics.get(self.objective)
        if value is not None:
            progress["objective"] = round(float(value), 6)
        RunRecord(self.run_dir).update(progress=progress)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._beat(trainer, force=True)

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        self._beat(trainer)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._beat(trainer, force=True)  # a new objective value: show it now

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._beat(trainer, force=True)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        # A run stopped by a signal checkpointed at this step: the record says how far it got, so that whoever
        # continues it (a sweep counting attempts without progress) sees the steps of a short attempt too.
        self._beat(trainer, force=True)
