"""SimMatch (Zheng et al. 2022, "SimMatch: Semi-supervised Learning with Similarity Matching").

With very few labels a class prediction alone is a poor pseudo-label; SimMatch also compares each unlabeled
embedding with a memory of *labeled* embeddings. A projection head maps backbone features to L2-normalised
embeddings ``z``; the weak view's embedding gives a similarity distribution over the labeled memory
``q_j = softmax_j(z^w . z_j / t)``, the strong view's ``q^s`` likewise. The two views' predictions calibrate each other:

- label unfolding (the instance pseudo-label): ``q^_j = q_j p^w_{y_j} / sum_k q_k p^w_{y_k}``;
- label aggregation (the class pseudo-label), with ``q^agg_c = sum_{j: y_j = c} q_j``: the paper's
  ``p^_c = p^w_c q^agg_c / sum_c' p^w_c' q^agg_c'`` (``aggregation_alpha: null``), or the authors' CIFAR code's
  ``p^ = alpha p^w + (1 - alpha) q^agg`` (``aggregation_alpha: 0.9``).

The loss is ``1(max p^ >= tau) H(p^, p^s)`` (soft targets, FixMatch's threshold) plus ``in_weight * H(q^, q^s)``.
``p^w`` is the weak view's (uniformly aligned) class probabilities, from the student or the EMA teacher like the other
weak/strong heads.

The labeled memory holds, per class, the ``bank_per_class`` most recent labeled embeddings (the labeled view the
supervised head trains on, detached), so it needs no sample indices and works for any labeled dataset; with 10
labeled images per class and ``bank_per_class: 10`` it is the whole labeled set, refreshed as the model learns, as
the paper's memory (there kept per sample index with momentum 0.7). Under DDP each rank adds every rank's labeled
embeddings, so all ranks hold the same memory. The memory and the projection head are checkpointed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from sesemi.losses.base import StepContext, gather_across_ranks
from sesemi.losses.weak_strong import EmbeddingProjection, WeakStrongHead

_MASKED = -1e9  # logit of a memory slot not yet filled: finite, so 0 * log_softmax stays 0


def unfold_labels(similarity: Tensor, class_probs: Tensor, memory_labels: Tensor) -> Tensor:
    """Label unfolding: each memory entry's similarity ``q_j`` scaled by the class probability of its label,
    renormalised over the memory. ``similarity`` [B, K], ``class_probs`` [B, C], ``memory_labels`` [K]."""
    unfolded = similarity * class_probs[:, memory_labels]
    return unfolded / unfolded.sum(-1, keepdim=True).clamp_min(1e-12)


def aggregate_labels(
    similarity: Tensor, class_probs: Tensor, memory_labels: Tensor, alpha: float | None = None
) -> Tensor:
    """Label aggregation: the similarities summed per class (``q^agg``) calibrate the class probabilities, by
    product (``alpha`` None, the paper) or by mixing ``alpha p + (1 - alpha) q^agg`` (the authors' CIFAR code)."""
    aggregated = torch.zeros_like(class_probs).index_add_(1, memory_labels, similarity)
    if alpha is not None:
        return alpha * class_probs + (1 - alpha) * aggregated
    calibrated = class_probs * aggregated
    return calibrated / calibrated.sum(-1, keepdim=True).clamp_min(1e-12)


class SimMatchHead(WeakStrongHead):
    """SimMatch's unlabeled loss (see the module docstring): class pseudo-labels calibrated by similarity to the
    labeled memory, and instance pseudo-labels over that memory calibrated by the class prediction.

    ``threshold`` (tau), ``temperature`` (t of the similarities), ``in_weight`` (lambda_in), ``projection_dim``,
    ``bank_per_class``, ``aggregation_alpha``; ``labeled_view``: the labeled stream's view whose embeddings fill the
    memory. ``pseudo_labels_from`` and the unlabeled views: see :class:`~sesemi.losses.weak_strong.WeakStrongHead`;
    ``distribution_alignment`` (to a uniform class distribution) defaults to true, as the paper aligns to the labeled
    class distribution.
    """

    def __init__(
        self,
        threshold: float = 0.95,
        temperature: float = 0.1,
        in_weight: float = 1.0,
        projection_dim: int = 128,
        bank_per_class: int = 64,
        aggregation_alpha: float | None = None,
        labeled_view: str = "weak",
        distribution_alignment: bool = True,
        **kwargs,
    ) -> None:
        super().__init__(distribution_alignment=distribution_alignment, **kwargs)
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if bank_per_class < 1:
            raise ValueError(f"bank_per_class must be >= 1, got {bank_per_class}")
        if aggregation_alpha is not None and not 0.0 <= aggregation_alpha <= 1.0:
            raise ValueError(f"aggregation_alpha must be in [0, 1] or null, got {aggregation_alpha}")
        self.threshold, self.temperature, self.in_weight = threshold, temperature, in_weight
        self.projection_dim, self.bank_per_class, self.aggregation_alpha = (
            projection_dim,
            bank_per_class,
            aggregation_alpha,
        )
        self.labeled_view = labeled_view
        self.views = (*self.views, ("labeled", labeled_view))

    def build(self, in_features: int, num_classes: int) -> None:
        super().build(in_features, num_classes)
        self.projection = EmbeddingProjection(in_features, self.projection_dim)
        self.register_buffer("memory", torch.zeros(num_classes, self.bank_per_class, self.projection_dim))
        self.register_buffer("memory_filled", torch.zeros(num_classes, dtype=torch.long))  # slots in use per class
        self.register_buffer("memory_next", torch.zeros(num_classes, dtype=torch.long))  # next slot to overwrite
        self.register_buffer(
            "memory_labels", torch.arange(num_classes).repeat_interleave(self.bank_per_class), persistent=False
        )

    @torch.no_grad()
    def remember(self, embeddings: Tensor, labels: Tensor) -> None:
        """Write labeled embeddings into their classes' ring buffers (every rank's, under DDP); when a batch has
        more of a class than its buffer holds, the last ones are kept."""
        embeddings, labels = gather_across_ranks(embeddings), gather_across_ranks(labels)
        one_hot = F.one_hot(labels, len(self.memory_filled))
        order = (one_hot.cumsum(0) - 1).gather(1, labels[:, None]).squeeze(1)  # position among its class in the batch
        counts = one_hot.sum(0)
        keep = order >= counts[labels] - self.bank_per_class
        slots = (self.memory_next[labels] + order) % self.bank_per_class
        self.memory[labels[keep], slots[keep]] = embeddings[keep].to(self.memory.dtype)
        self.memory_next.add_(counts).remainder_(self.bank_per_class)
        self.memory_filled.add_(counts).clamp_(max=self.bank_per_class)

    def similarity_logits(self, embeddings: Tensor) -> Tensor:
        """``z . z_j / t`` against every memory slot [B, C * bank_per_class], in float32 (a bf16 product would round
        the similarities to ~2 digits before the temperature magnifies them); empty slots get a vanishing weight."""
        with torch.autocast(embeddings.device.type, enabled=False):
            logits = embeddings @ self.memory.flatten(0, 1).t() / self.temperature
        filled = torch.arange(self.bank_per_class, device=logits.device) < self.memory_filled[:, None]
        return logits.masked_fill(~filled.flatten(), _MASKED)

    def forward(self, ctx: StepContext) -> Tensor:
        self.remember(self.projection(ctx.features("labeled", self.labeled_view)).detach(), ctx.targets("labeled"))
        class_probs = self.weak_probs(ctx)
        with torch.no_grad():
            weak_features = (
                ctx.teacher_features(self.stream, self.weak_view)
                if self.pseudo_labels_from == "teacher"
                else ctx.features(self.stream, self.weak_view)
            )
            similarity = torch.softmax(self.similarity_logits(self.projection(weak_features)), dim=-1)
            labels = self.memory_labels
            instance_targets = unfold_labels(similarity, class_probs, labels)
            targets = aggregate_labels(similarity, class_probs, labels, self.aggregation_alpha)
        confidence, hard = targets.max(dim=-1)
        mask = (confidence >= self.threshold).float()
        ctx.report_pseudo_labels(hard, mask, self.stream)
        class_loss = (F.cross_entropy(self.strong_logits(ctx).float(), targets, reduction="none") * mask).mean()
        strong_similarity = self.similarity_logits(self.projection(ctx.features(self.stream, self.strong_view)))
        instance_loss = F.cross_entropy(strong_similarity, instance_targets)
        ctx.log("mask_ratio", mask.mean())
        ctx.log("class_loss", class_loss)
        ctx.log("instance_loss", instance_loss)
        return class_loss + self.in_weight * instance_loss
