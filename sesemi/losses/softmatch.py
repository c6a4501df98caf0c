"""SoftMatch (Chen et al. 2023, "SoftMatch: Addressing the Quantity-Quality Trade-off in Semi-supervised Learning").

A hard threshold trades quantity (FreeMatch's low early thresholds: many wrong pseudo-labels) against quality
(FixMatch's 0.95: few). SoftMatch uses every weak-view pseudo-label with a weight from a truncated Gaussian of its
confidence ``max p``:

    lambda(p) = lambda_max * exp(-(max p - mu_t)^2 / (2 sigma_t^2))   if max p < mu_t,   lambda_max otherwise,

``mu_t`` and ``sigma_t^2`` being EMAs (momentum ``m``, 0.999) of the batch mean and unbiased variance of ``max p``,
starting at ``1/C`` and 1. ``lambda_max`` is the head's ``weight``. The weak-view probabilities are aligned to a
uniform class distribution first (uniform alignment, UA, on by default as in the paper). ``n_sigma`` divides the
standard deviation: the authors' code uses ``sigma_t^2 / n_sigma^2`` with ``n_sigma = 2`` (a narrower Gaussian than
the paper's formula, which is ``n_sigma = 1``). The statistics are buffers (checkpointed), computed over the global
batch under DDP.
"""

from __future__ import annotations

import torch
from torch import Tensor

from sesemi.losses.base import StepContext, sum_across_ranks
from sesemi.losses.pseudo_label import masked_cross_entropy
from sesemi.losses.weak_strong import WeakStrongHead


class SoftMatchHead(WeakStrongHead):
    """SoftMatch's unlabeled loss: every weak-view argmax is the strong view's target, weighted by
    :meth:`sample_weights`. ``pseudo_labels_from`` and the views: see
    :class:`~sesemi.losses.weak_strong.WeakStrongHead`; ``distribution_alignment`` defaults to true here."""

    def __init__(
        self, momentum: float = 0.999, n_sigma: float = 2.0, distribution_alignment: bool = True, **kwargs
    ) -> None:
        super().__init__(distribution_alignment=distribution_alignment, **kwargs)
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        if n_sigma <= 0:
            raise ValueError(f"n_sigma must be > 0, got {n_sigma}")
        self.momentum, self.n_sigma = momentum, n_sigma

    def build(self, in_features: int, num_classes: int) -> None:
        super().build(in_features, num_classes)
        self.register_buffer("confidence_mean", torch.tensor(1.0 / num_classes))  # mu_t
        self.register_buffer("confidence_var", torch.tensor(1.0))  # sigma_t^2

    @torch.no_grad()
    def update(self, confidence: Tensor) -> None:
        """Fold a batch's ``max p`` (all ranks' under DDP) into ``mu_t`` and the unbiased ``sigma_t^2``."""
        c = confidence.double()  # the variance as E[c^2] - E[c]^2 cancels: float64 keeps it exact enough
        stats = sum_across_ranks(torch.stack([c.sum(), (c**2).sum(), c.new_tensor(len(c))]))
        n = stats[2].clamp_min(1.0)
        mean = stats[0] / n
        var = ((stats[1] - n * mean**2) / (n - 1).clamp_min(1.0)).clamp_min(0.0)
        m = self.momentum
        self.confidence_mean.mul_(m).add_(mean.to(self.confidence_mean.dtype), alpha=1 - m)
        self.confidence_var.mul_(m).add_(var.to(self.confidence_var.dtype), alpha=1 - m)

    def sample_weights(self, confidence: Tensor) -> Tensor:
        """The truncated Gaussian ``lambda(p) / lambda_max`` of each sample's ``max p``."""
        below = (confidence - self.confidence_mean).clamp_max(0.0)
        var = (self.confidence_var / self.n_sigma**2).clamp_min(1e-12)
        return torch.exp(-(below**2) / (2 * var))

    def forward(self, ctx: StepContext) -> Tensor:
        confidence, labels = self.weak_probs(ctx).max(dim=-1)
        self.update(confidence)  # the current batch counts toward its own statistics, as in the authors' code
        weights = self.sample_weights(confidence)
        ctx.report_pseudo_labels(labels, weights, self.stream)  # every sample is used, with its weight
        ctx.log("mean_weight", weights.mean())
        ctx.log("confidence_mean", self.confidence_mean)
        ctx.log("confidence_var", self.confidence_var)
        return masked_cross_entropy(self.strong_logits(ctx), labels, weights)
