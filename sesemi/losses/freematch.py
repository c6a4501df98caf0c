"""FreeMatch (Wang et al. 2023, "FreeMatch: Self-adaptive Thresholding for Semi-supervised Learning").

FixMatch's fixed 0.95 threshold rejects almost every unlabeled sample early in training and treats all classes alike.
FreeMatch's self-adaptive thresholding (SAT) derives the threshold from the model's own confidence instead:

- a global threshold ``tau``: EMA (momentum ``lambda``) of the batch's mean max-probability on the weak view,
  starting at ``1/C``, so it is low while the model is unsure and rises as it becomes confident;
- a local estimate ``p~(c)``: EMA of the batch's mean probability of class ``c``, starting at ``1/C``;
- class ``c``'s threshold ``tau(c) = tau * p~(c) / max_c' p~(c')`` (MaxNorm), lower for classes the model
  predicts less, so hard classes still get pseudo-labels.

A weak-view prediction is a hard pseudo-label for the strong view when its confidence reaches ``tau(argmax)``. The
optional self-adaptive fairness term (SAF) discourages the confident predictions from collapsing onto a few classes.
The statistics are buffers, so they are checkpointed; under DDP they are computed over the global batch. The class
thresholds are logged as one curve per class (``freematch_threshold/<class>``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from sesemi.losses.base import StepContext, sum_across_ranks
from sesemi.losses.pseudo_label import masked_cross_entropy
from sesemi.losses.weak_strong import WeakStrongHead


def _inverse_or_zero(t: Tensor) -> Tensor:
    """``1 / t`` with 0 where ``t`` is 0 (a class absent from a histogram gets no weight, not an infinite one)."""
    return torch.where(t > 0, 1.0 / t.clamp_min(torch.finfo(t.dtype).tiny), torch.zeros_like(t))


def _sum_normalize(t: Tensor) -> Tensor:
    return t / t.sum(dim=-1, keepdim=True).clamp_min(1e-12)


def self_adaptive_fairness(strong_logits: Tensor, mask: Tensor, class_probs: Tensor, label_hist: Tensor) -> Tensor:
    """FreeMatch's SAF loss ``-H(SumNorm(p~ / h~), SumNorm(p_bar / h_bar))`` (paper Eq. 11).

    ``p~``/``h~`` are the EMA class probabilities and EMA histogram of weak-view argmaxes; ``p_bar``/``h_bar`` are the
    mean strong-view probabilities and the normalised histogram of strong-view argmaxes over the confident
    (``mask``) samples. ``H(a, b) = -sum a log b``. As in the paper and the authors' code, this *negative*
    cross-entropy is the quantity minimised. The histograms only rescale (no gradient). Returns 0 when no sample is
    confident, without a host sync.
    """
    probs = torch.softmax(strong_logits.float(), dim=-1)
    weights = mask.float()[:, None]
    count = weights.sum().clamp_min(1.0)
    mean_probs = (probs * weights).sum(0) / count
    hist = (F.one_hot(probs.argmax(-1), probs.shape[-1]).float() * weights).sum(0) / count
    target = _sum_normalize(class_probs * _inverse_or_zero(label_hist))
    batch = _sum_normalize(mean_probs * _inverse_or_zero(hist))
    loss = (target * torch.log(batch + 1e-12)).sum()
    return loss * (mask.sum() > 0).float()


class FreeMatchHead(WeakStrongHead):
    """FreeMatch's unlabeled loss: self-adaptively thresholded weak-view pseudo-labels for the strong view, plus SAF.

    ``momentum`` is the EMA momentum ``lambda`` of the threshold statistics (0.999 in the paper); ``fairness_weight``
    is ``w_f / w_u``, the weight of the self-adaptive fairness term relative to the pseudo-label loss (0 disables it).
    ``pseudo_labels_from``, ``distribution_alignment`` and the view names: see
    :class:`~sesemi.losses.weak_strong.WeakStrongHead` (the thresholds follow the probabilities they are given,
    aligned or the teacher's). The statistics need the number of classes, so they are created in :meth:`build`.
    """

    def __init__(self, momentum: float = 0.999, fairness_weight: float = 0.01, **kwargs) -> None:
        super().__init__(**kwargs)
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        self.momentum, self.fairness_weight = momentum, fairness_weight

    def build(self, in_features: int, num_classes: int) -> None:
        super().build(in_features, num_classes)
        uniform = torch.full((num_classes,), 1.0 / num_classes)
        self.register_buffer("global_threshold", torch.tensor(1.0 / num_classes))  # tau_t
        self.register_buffer("class_probs", uniform.clone())  # p~_t(c)
        self.register_buffer("label_hist", uniform.clone())  # h~_t(c), used by SAF

    def class_thresholds(self) -> Tensor:
        """``tau_t(c) = MaxNorm(p~_t(c)) * tau_t``."""
        return self.class_probs / self.class_probs.max() * self.global_threshold

    @torch.no_grad()
    def update(self, probs: Tensor) -> None:
        """Fold a batch of weak-view probabilities (all ranks' batches under DDP) into the EMA statistics."""
        confidence, labels = probs.max(dim=-1)
        num_classes = probs.shape[-1]
        stats = torch.cat(
            [
                confidence.sum()[None],
                probs.sum(0),
                F.one_hot(labels, num_classes).sum(0).to(probs.dtype),  # bincount has no deterministic CUDA kernel
                probs.new_tensor([len(probs)]),
            ]
        )
        stats = sum_across_ranks(stats)
        count = stats[-1].clamp_min(1.0)
        m = self.momentum
        self.global_threshold.mul_(m).add_(stats[0] / count, alpha=1 - m)
        self.class_probs.mul_(m).add_(stats[1 : 1 + num_classes] / count, alpha=1 - m)
        self.label_hist.mul_(m).add_(stats[1 + num_classes : 1 + 2 * num_classes] / count, alpha=1 - m)

    def forward(self, ctx: StepContext) -> Tensor:
        probs = self.weak_probs(ctx)
        self.update(probs)  # the current batch counts toward its own threshold, as in the paper
        confidence, labels = probs.max(dim=-1)
        mask = (confidence >= self.class_thresholds()[labels]).float()
        strong_logits = self.strong_logits(ctx)
        loss = masked_cross_entropy(strong_logits, labels, mask)
        ctx.report_pseudo_labels(labels, mask, self.stream)
        ctx.log("mask_ratio", mask.mean())
        ctx.log("global_threshold", self.global_threshold)
        ctx.log_per_class("threshold", self.class_thresholds())
        if self.fairness_weight:
            fairness = self_adaptive_fairness(strong_logits, mask, self.class_probs, self.label_hist)
            ctx.log("fairness", fairness)
            loss = loss + self.fairness_weight * fairness
        return loss
