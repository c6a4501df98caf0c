"""The progress bar: Lightning's TQDM bar, showing the training loss without a host-device sync per step."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import TQDMProgressBar


class ProgressBar(TQDMProgressBar):
    """Lightning's ``TQDMProgressBar`` that also shows ``show`` (default ``train/loss``) from the callback metrics.

    Lightning turns every metric logged with ``prog_bar=True`` into a Python number after every training step (an
    ``.item()``, which waits for the GPU), whether the bar refreshes or not. sesemi logs the training loss without
    ``prog_bar``, and this bar reads it only when it refreshes, every ``refresh_rate`` steps.
    """

    def __init__(
        self,
        refresh_rate: int = 1,
        process_position: int = 0,
        leave: bool = False,
        show: Sequence[str] = ("train/loss",),
    ) -> None:
        super().__init__(refresh_rate=refresh_rate, process_position=process_position, leave=leave)
        self.show = list(show)

    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        items = super().get_metrics(trainer, pl_module)
        metrics = trainer.callback_metrics
        for key in self.show:
            value = metrics.get(key)
            if value is not None and key not in items:
                items[key] = float(value)
        return items
