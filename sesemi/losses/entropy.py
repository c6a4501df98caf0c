"""Entropy minimisation (Grandvalet & Bengio 2005): push the classifier toward confident predictions on unlabeled
images, a low-density-separation prior with no second view and no teacher."""

from __future__ import annotations

import torch
from torch import Tensor

from sesemi.losses.base import LossHead, StepContext


def prediction_entropy(logits: Tensor) -> Tensor:
    """Per-sample entropy (nats) of ``softmax(logits)``: 0 for a one-hot, ``log(C)`` for a uniform prediction."""
    log_probs = torch.log_softmax(logits.float(), dim=-1)
    return -(log_probs.exp() * log_probs).sum(dim=-1)


class EntropyMinimizationHead(LossHead):
    """Mean prediction entropy of the student on one view (gradients flow through both ``p`` and ``log p``)."""

    def __init__(self, stream: str = "unlabeled", view: str = "weak", **kwargs) -> None:
        super().__init__(**kwargs)
        self.stream, self.view = stream, view
        self.views = ((stream, view),)

    def forward(self, ctx: StepContext) -> Tensor:
        return prediction_entropy(ctx.logits(self.stream, self.view)).mean()
