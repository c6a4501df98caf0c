"""FixMatch (Sohn et al. 2020): confident predictions on a weak view are hard targets for a strong view."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from sesemi.losses.base import LossHead, StepContext


def confident_pseudo_labels(logits: Tensor, threshold: float, temperature: float = 1.0) -> tuple[Tensor, Tensor]:
    """Hard pseudo-labels and a float mask of the samples whose top probability reaches ``threshold``."""
    probs = torch.softmax(logits.detach() / temperature, dim=-1)
    confidence, labels = probs.max(dim=-1)
    return labels, (confidence >= threshold).float()


class FixMatchHead(LossHead):
    """Cross-entropy of the strong view against the weak view's confident argmax (threshold 0.95 by default)."""

    def __init__(
        self,
        threshold: float = 0.95,
        temperature: float = 1.0,
        weak_view: str = "weak",
        strong_view: str = "strong",
        stream: str = "unlabeled",
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.threshold, self.temperature = threshold, temperature
        self.stream, self.weak_view, self.strong_view = stream, weak_view, strong_view
        self.views = ((stream, weak_view), (stream, strong_view))

    def forward(self, ctx: StepContext) -> Tensor:
        labels, mask = confident_pseudo_labels(
            ctx.logits(self.stream, self.weak_view), self.threshold, self.temperature
        )
        ctx.report_pseudo_labels(labels, mask, self.stream)
        ctx.log("mask_ratio", mask.mean())
        loss = F.cross_entropy(ctx.logits(self.stream, self.strong_view), labels, reduction="none")
        return (loss * mask).mean()
