"""TensorBoard, with an ordered CUSTOM SCALARS layout and the run's config in HPARAMS next to its objective."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pytorch_lightning.loggers import TensorBoardLogger as _LightningTensorBoardLogger
from pytorch_lightning.utilities import rank_zero_only

from sesemi.loggers.runs import flat_config

# TensorBoard's SCALARS and TIME SERIES tabs sort card groups by name (``lr`` before ``train``); its CUSTOM SCALARS
# tab shows this layout in this order instead: loss and accuracy first, one chart per quantity with a line per
# head or class. Each tag is a regular expression that TensorBoard matches at the START of a tag (``re.match``).
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
        "precision per class": ["Multiline", [r"^[^/]+_pl_precision/"]],
        "recall per class": ["Multiline", [r"^[^/]+_pl_recall/"]],
        "class thresholds (FreeMatch, FlexMatch)": ["Multiline", [r"^[^/]+_threshold/"]],
    },
    "3. optimisation": {"learning rate": ["Multiline", [r"^lr/"]]},
}


class TensorBoardLogger(_LightningTensorBoardLogger):
    """Lightning's TensorBoard logger with :data:`LAYOUT` as the CUSTOM SCALARS dashboard, the run's config in
    HPARAMS with ``objective`` (``run.objective``) as its metric, and without the ``epoch`` card Lightning adds to
    every log (sesemi's runs are counted in steps; ``epoch_card=True`` keeps it for epoch-based runs).

    ``name=""`` writes the event files into ``save_dir`` (the run dir) itself; a run dir that an earlier sesemi
    gave a ``tensorboard/`` event dir keeps it, so a resumed old run stays one TensorBoard run.
    """

    def __init__(
        self, save_dir: str, *args: Any, name: str = "", objective: str = "val/acc", epoch_card: bool = False, **kwargs
    ) -> None:
        if not name and any((Path(save_dir) / "tensorboard").glob("events.out.tfevents.*")):
            name = "tensorboard"
        super().__init__(save_dir, *args, name=name, **kwargs)
        self.objective = objective
        self.epoch_card = epoch_card
        self._layout_written = False
        self._hparams_written = False

    @rank_zero_only
    def log_hyperparams(self, params: Any, metrics: Mapping[str, Any] | None = None, step: int | None = None) -> None:
        """``hparams.yaml`` (Lightning), and once per attempt TensorBoard's HPARAMS summaries: ``params`` with the
        objective as the metric. The metric's values are the objective's own scalars; a placeholder value would be
        a point on its curve, so none is logged here."""
        super().log_hyperparams(params, metrics, step)
        if self._hparams_written:
            return
        from torch.utils.tensorboard.summary import hparams

        experiment, session_start, _ = hparams(flat_config(dict(params)), {self.objective: 0.0})
        for summary in (experiment, session_start):
            self.experiment.file_writer.add_summary(summary)
        self._hparams_written = True

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        if not self._layout_written:
            self.experiment.add_custom_scalars(LAYOUT)
            self._layout_written = True
        if not self.epoch_card:
            metrics = {k: v for k, v in metrics.items() if k != "epoch"}
        super().log_metrics(metrics, step)
