"""Fail at the first validation, with the key and the fix, when ``run.objective`` is not a logged metric."""

from __future__ import annotations

import pytorch_lightning as pl

from sesemi.errors import ConfigError


class ObjectiveCheck(pl.Callback):
    """Runs before ``ModelCheckpoint`` (Lightning orders checkpoint callbacks last), so a typo'd objective is
    reported as a config error instead of a checkpointing error or, in a sweep, a silent NaN."""

    def __init__(self, objective: str) -> None:
        self.objective = objective

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or self.objective in trainer.callback_metrics:
            return
        logged = sorted(k for k in trainer.callback_metrics if k.startswith(("val/", "test/")))
        raise ConfigError(
            "run.objective",
            f"{self.objective!r} is not logged at validation; validation logs {logged}",
            f"set run.objective to one of {logged}",
        )
