"""Supervised cross-entropy on the labeled stream."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from sesemi.losses.base import LossHead, StepContext


class CrossEntropyHead(LossHead):
    """Cross-entropy of the classifier on a labeled view, with optional class weights and label smoothing."""

    def __init__(
        self,
        view: str = "weak",
        stream: str = "labeled",
        class_weights: Sequence[float] | None = None,
        label_smoothing: float = 0.0,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.stream, self.view = stream, view
        self.views = ((stream, view),)
        self.label_smoothing = label_smoothing
        weights = torch.tensor(class_weights, dtype=torch.float32) if class_weights is not None else None
        self.register_buffer("class_weights", weights, persistent=False)

    def build(self, in_features: int, num_classes: int) -> None:
        if self.class_weights is not None and len(self.class_weights) != num_classes:
            raise ValueError(
                f"class_weights has {len(self.class_weights)} entries but the dataset has {num_classes} classes"
            )

    def forward(self, ctx: StepContext) -> Tensor:
        return F.cross_entropy(
            ctx.logits(self.stream, self.view),
            ctx.targets(self.stream),
            weight=self.class_weights,
            label_smoothing=self.label_smoothing,
        )
