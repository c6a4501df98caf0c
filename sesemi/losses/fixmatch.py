"""FixMatch (Sohn et al. 2020): confident predictions on a weak view are hard targets for a strong view."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from sesemi.losses.base import StepContext
from sesemi.losses.weak_strong import WeakStrongHead


def confident_pseudo_labels(logits: Tensor, threshold: float, temperature: float = 1.0) -> tuple[Tensor, Tensor]:
    """Hard pseudo-labels and a float mask of the samples whose top probability reaches ``threshold``."""
    probs = torch.softmax(logits.detach() / temperature, dim=-1)
    confidence, labels = probs.max(dim=-1)
    return labels, (confidence >= threshold).float()


class FixMatchHead(WeakStrongHead):
    """Cross-entropy of the strong view against the weak view's confident argmax (threshold 0.95 by default).

    ``pseudo_labels_from`` (``student``/``teacher``), ``distribution_alignment`` and the view names: see
    :class:`~sesemi.losses.weak_strong.WeakStrongHead`."""

    def __init__(self, threshold: float = 0.95, temperature: float = 1.0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.threshold, self.temperature = threshold, temperature

    def forward(self, ctx: StepContext) -> Tensor:
        confidence, labels = self.weak_probs(ctx, self.temperature).max(dim=-1)
        mask = (confidence >= self.threshold).float()
        ctx.report_pseudo_labels(labels, mask, self.stream)
        ctx.log("mask_ratio", mask.mean())
        loss = F.cross_entropy(self.strong_logits(ctx), labels, reduction="none")
        return (loss * mask).mean()
