"""sesemi's TensorBoard logger: Lightning's, with readable cards for step-based runs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pytorch_lightning.loggers import TensorBoardLogger as _LightningTensorBoardLogger
from pytorch_lightning.utilities import rank_zero_only

# TensorBoard's SCALARS and TIME SERIES tabs sort card groups by name (``lr`` before ``train``); its CUSTOM SCALARS
# tab shows this layout in this order instead: loss and accuracy first, one chart per quantity with a line per
# head or class. Tags are regular expressions.
LAYOUT = {
    "1. loss and accuracy": {
        "loss": ["Multiline", [r"^train/loss$", r"^val/loss$"]],
        "accuracy": ["Multiline", [r"^val/acc$", r"^test/acc$"]],
        "loss per head": ["Multiline", [r"^train/loss_"]],
        "validation accuracy per class": ["Multiline", [r"^val_class_acc/"]],
    },
    "2. pseudo-labels": {
        "precision (used and right / used)": ["Multiline", [r"^train/.*/pl_precision$"]],
        "recall (used and right / all)": ["Multiline", [r"^train/.*/pl_recall$"]],
        "mask ratio (share used)": ["Multiline", [r"^train/.*/mask_ratio$"]],
        "precision per class": ["Multiline", [r"_pl_precision/"]],
        "recall per class": ["Multiline", [r"_pl_recall/"]],
        "class thresholds (FreeMatch)": ["Multiline", [r"_threshold/"]],
    },
    "3. optimisation": {"learning rate": ["Multiline", [r"^lr/"]]},
}


class TensorBoardLogger(_LightningTensorBoardLogger):
    """Lightning's TensorBoard logger without the ``epoch`` card Lightning adds to every log (sesemi's runs are
    counted in steps; ``epoch_card=True`` keeps it for epoch-based runs), and with :data:`LAYOUT` as the CUSTOM
    SCALARS dashboard."""

    def __init__(self, *args: Any, epoch_card: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.epoch_card = epoch_card
        self._layout_written = False

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        if not self._layout_written:
            self.experiment.add_custom_scalars(LAYOUT)
            self._layout_written = True
        if not self.epoch_card:
            metrics = {k: v for k, v in metrics.items() if k != "epoch"}
        super().log_metrics(metrics, step)
