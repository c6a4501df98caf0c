"""Now and then, a grid of each training view's first images in TensorBoard."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.loggers import TensorBoardLogger
from pytorch_lightning.utilities import rank_zero_only


class ImageGridLogger(pl.Callback):
    """Every ``every_n_steps`` optimizer steps (and at the first), log ``max_images`` of each stream's views."""

    def __init__(self, every_n_steps: int = 500, max_images: int = 32) -> None:
        self.every_n_steps = every_n_steps
        self.max_images = max_images

    @rank_zero_only
    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step - 1
        if step % self.every_n_steps != 0:
            return
        loggers = [lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]
        if not loggers or not isinstance(batch, Mapping):
            return
        from torchvision.utils import make_grid

        for stream, views in batch.items():
            for view, images in (views or {}).items():  # None: a stream not loaded yet (warm-up)
                if view == "target" or getattr(images, "ndim", 0) != 4:
                    continue
                grid = make_grid(images[: self.max_images].detach().float().cpu(), nrow=8, normalize=True)
                for logger in loggers:
                    logger.experiment.add_image(f"views/{stream}/{view}", grid, global_step=step)
