"""Fail at the first validation, with the key and the fix, when ``run.objective`` is not a logged metric."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytorch_lightning as pl

from sesemi.errors import ConfigError


def objective_candidates(metrics: Mapping[str, Any]) -> list[str]:
    """The logged metrics an objective can be: the validation and test scalars (not per-class curves)."""
    return sorted(k for k in metrics if k.startswith(("val/", "test/")))


class ObjectiveCheck(pl.Callback):
    """Runs before ``ModelCheckpoint`` (Lightning orders checkpoint callbacks last), so a typo'd objective is
    reported as a config error instead of a checkpointing error or, in a sweep, a silent NaN."""

    def __init__(self, objective: str) -> None:
        self.objective = objective

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or self.objective in trainer.callback_metrics:
            return
        logged = objective_candidates(trainer.callback_metrics)
        raise ConfigError(
            "run.objective",
            f"{self.objective!r} is not logged at validation; validation logs {logged}",
            f"set run.objective to one of {logged}",
        )
