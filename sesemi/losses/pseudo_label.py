"""Pseudo-Label (Lee 2013): the student's own confident argmax on a view is the hard target for that same view."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from sesemi.losses.base import LossHead, StepContext
from sesemi.losses.fixmatch import confident_pseudo_labels


def masked_cross_entropy(logits: Tensor, labels: Tensor, mask: Tensor) -> Tensor:
    """Cross-entropy averaged over the whole batch, masked samples counting as 0.

    Dividing by the batch size rather than by ``mask.sum()`` keeps the loss free of host syncs and makes its scale
    grow with the fraction of confident samples, as in FixMatch and FreeMatch.
    """
    return (F.cross_entropy(logits, labels, reduction="none") * mask).mean()


class PseudoLabelHead(LossHead):
    """Cross-entropy of a view's logits against their own detached argmax where its probability reaches ``threshold``.

    Lee (2013) used every argmax (``threshold=0``) with a ramped-up weight; the 0.95 threshold default follows Oliver
    et al. (2018, "Realistic Evaluation of Deep Semi-Supervised Learning Algorithms"), which keeps the early, mostly
    wrong pseudo-labels out of the loss.
    """

    def __init__(self, threshold: float = 0.95, stream: str = "unlabeled", view: str = "weak", **kwargs) -> None:
        super().__init__(**kwargs)
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {threshold}")
        self.threshold = threshold
        self.stream, self.view = stream, view
        self.views = ((stream, view),)

    def forward(self, ctx: StepContext) -> Tensor:
        logits = ctx.logits(self.stream, self.view)
        labels, mask = confident_pseudo_labels(logits, self.threshold)  # detached: targets carry no gradient
        ctx.report_pseudo_labels(labels, mask, self.stream)
        ctx.log("mask_ratio", mask.mean())
        return masked_cross_entropy(logits, labels, mask)
