"""The progress bar: one bar for the whole fit, counted in optimizer steps, on Lightning's TQDM bar; under a pipe
(a ``> log.txt``, every SLURM ``.out`` file) one line per validation and per few percent instead of redraws."""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Sequence
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import TQDMProgressBar
from pytorch_lightning.callbacks.progress.tqdm_progress import Tqdm


class ProgressBar(TQDMProgressBar):
    """Lightning's ``TQDMProgressBar``, with one training bar for the whole run instead of one per epoch.

    sesemi runs are set in steps (``trainer.max_steps``) and validate every ``val_check_interval`` steps across
    epochs; an epoch is only a pass over the smaller loader (11 steps on the digits default), so the bar counts
    ``global_step`` of ``max_steps`` with its rate and ETA, and shows the latest value of each metric in ``show``
    (default the objective and the training loss). Validation inside the fit, and the test set's evaluation after
    it, draw no bar of their own; a run of ``run.mode=validate`` or ``test`` keeps Lightning's bars.

    On a terminal the bar is redrawn in place. When stdout is not a terminal (a pipe, a file), the bar's line is
    written once per validation (with the new value) and each time another ``pipe_every_percent`` of the run is
    done, as a line of its own; evaluation bars are not drawn there.

    The metrics are read from ``trainer.callback_metrics`` only when the bar refreshes (every ``refresh_rate``
    steps): Lightning would turn every ``prog_bar=True`` metric into a Python number after each step, a host-device
    sync on a GPU.
    """

    def __init__(
        self,
        refresh_rate: int = 1,
        process_position: int = 0,
        show: Sequence[str] = ("val/acc", "train/loss"),
        pipe_every_percent: float = 5.0,
    ) -> None:
        super().__init__(refresh_rate=refresh_rate, process_position=process_position, leave=False)
        self.show = list(show)
        self.pipe_every_percent = float(pipe_every_percent)
        self._shown_step = -1
        self._total: int | None = None
        self._piped = False
        self._fitted = False  # a fit ran on this trainer: the test set's evaluation after it draws no bar
        self._pending = False  # piped: a line is due, written before the next step unless a validation writes it
        self._written_step = 0  # piped: the step of the last line written (or the first step)

    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        metrics = trainer.callback_metrics
        return {key: float(metrics[key]) for key in self.show if metrics.get(key) is not None}

    def _total_steps(self, trainer: pl.Trainer) -> int | None:
        if trainer.max_steps > 0:
            return trainer.max_steps
        per_epoch = self.total_train_batches // max(1, trainer.accumulate_grad_batches)
        epochs = trainer.max_epochs or -1
        return epochs * per_epoch if epochs > 0 and math.isfinite(per_epoch) else None

    def init_train_tqdm(self) -> Tqdm:
        return Tqdm(
            desc="train",
            total=self._total,
            unit="step",
            position=2 * self.process_position,
            disable=self.is_disabled,
            leave=True,
            dynamic_ncols=True,
            # Piped, the bar draws nothing itself: its lines are written by _write_line.
            file=open(os.devnull, "w") if self._piped else sys.stdout,
            smoothing=0,
            bar_format=self.BAR_FORMAT,
        )

    def on_sanity_check_start(self, *_: Any) -> None:
        pass  # the sanity check (off by default) draws no bar either

    def on_sanity_check_end(self, *_: Any) -> None:
        pass

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._fitted = True
        self._piped = not sys.stdout.isatty()
        self._total = self._total_steps(trainer)
        self.train_progress_bar = self.init_train_tqdm()
        self._written_step = trainer.global_step
        if trainer.global_step:  # a resumed run: start where it stopped; the rate counts this run's steps
            self.train_progress_bar.initial = trainer.global_step
            self._show(trainer, pl_module, force=True)

    def on_train_epoch_start(self, trainer: pl.Trainer, *_: Any) -> None:
        pass  # one bar for the run: an epoch does not restart it

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *_: Any) -> None:
        if self._pending:
            self._write_line()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *_: Any) -> None:
        self._show(trainer, pl_module)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        pass

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._show(trainer, pl_module, force=True)
        if self._piped and self._written_step != trainer.global_step:
            self._write_line()
        self.train_progress_bar.close()
        if self._piped:
            self.train_progress_bar.fp.close()

    def _show(self, trainer: pl.Trainer, pl_module: pl.LightningModule, force: bool = False) -> None:
        bar = self.train_progress_bar
        step = trainer.global_step
        if bar.disable:
            return
        if self._piped:
            bar.n = step
            bar.set_postfix(self.get_metrics(trainer, pl_module), refresh=False)
            self._pending = self._pending or self._crossed_percent(step)
            return
        if not (force or (step != self._shown_step and self._should_update(step, bar.total or 0))):
            return
        self._shown_step = step
        bar.n = step
        bar.set_postfix(self.get_metrics(trainer, pl_module), refresh=False)
        bar.refresh()

    def _crossed_percent(self, step: int) -> bool:
        """Whether ``step`` is the first step past another ``pipe_every_percent`` of the run since the last line."""
        total = self._total
        if not total or self.pipe_every_percent <= 0:
            return False
        every = total * self.pipe_every_percent / 100
        return math.floor(step / every) > math.floor(self._written_step / every)

    def _write_line(self) -> None:
        bar = self.train_progress_bar
        print(str(bar), file=sys.stdout, flush=True)
        self._written_step = bar.n
        self._pending = False

    def _draws_eval_bars(self, trainer: pl.Trainer) -> bool:
        """Lightning's validation and test bars: for a run of ``run.mode=validate|test`` on a terminal only."""
        return not self._fitted and trainer.state.fn in ("validate", "test") and sys.stdout.isatty()

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._draws_eval_bars(trainer):
            super().on_validation_start(trainer, pl_module)

    def on_validation_batch_start(self, trainer: pl.Trainer, *args: Any, **kwargs: Any) -> None:
        if self._draws_eval_bars(trainer):
            super().on_validation_batch_start(trainer, *args, **kwargs)

    def on_validation_batch_end(self, trainer: pl.Trainer, *args: Any, **kwargs: Any) -> None:
        if self._draws_eval_bars(trainer):
            super().on_validation_batch_end(trainer, *args, **kwargs)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._draws_eval_bars(trainer):
            super().on_validation_end(trainer, pl_module)
        elif trainer.state.fn == "fit" and not trainer.sanity_checking:
            self._show(trainer, pl_module, force=True)  # the new val/acc right away
            if self._piped:
                self._write_line()

    def on_test_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._draws_eval_bars(trainer):
            super().on_test_start(trainer, pl_module)

    def on_test_batch_start(self, trainer: pl.Trainer, *args: Any, **kwargs: Any) -> None:
        if self._draws_eval_bars(trainer):
            super().on_test_batch_start(trainer, *args, **kwargs)

    def on_test_batch_end(self, trainer: pl.Trainer, *args: Any, **kwargs: Any) -> None:
        if self._draws_eval_bars(trainer):
            super().on_test_batch_end(trainer, *args, **kwargs)

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._draws_eval_bars(trainer):
            super().on_test_end(trainer, pl_module)
