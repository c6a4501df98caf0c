"""What FixMatch, FreeMatch and SoftMatch share: a strong view trained on pseudo-labels from a weak view of the same
unlabeled images, the weak view's probabilities taken from the student or the EMA teacher and optionally aligned
to a uniform class distribution."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sesemi.losses.base import LossHead, StepContext, sum_across_ranks

SOURCES = ("student", "teacher")


class DistributionAlignment(nn.Module):
    """Uniform distribution alignment (ReMixMatch's DA with a uniform target, SoftMatch's "UA"):
    ``p <- Normalize(p * (1/C) / p_model)``, with ``p_model`` the EMA (``momentum``) of the batch's mean probability
    vector, folded in before aligning and set to the first batch's mean (as in the SoftMatch authors' code). Classes
    the model over-predicts are damped, under-predicted ones boosted, which counters the confirmation bias of
    confusable classes. ``p_model`` is a buffer (checkpointed) computed over the global batch under DDP."""

    def __init__(self, num_classes: int, momentum: float = 0.999) -> None:
        super().__init__()
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"alignment_momentum must be in [0, 1), got {momentum}")
        self.momentum = momentum
        self.register_buffer("p_model", torch.full((num_classes,), 1.0 / num_classes))
        self.register_buffer("started", torch.tensor(False))

    @torch.no_grad()
    def forward(self, probs: Tensor) -> Tensor:
        stats = sum_across_ranks(torch.cat([probs.sum(0), probs.new_tensor([len(probs)])]))
        batch_mean = stats[:-1] / stats[-1].clamp_min(1.0)
        ema = self.momentum * self.p_model + (1 - self.momentum) * batch_mean
        self.p_model.copy_(torch.where(self.started, ema, batch_mean))  # no host sync
        self.started.fill_(True)
        target = 1.0 / probs.shape[-1]
        aligned = probs * (target + 1e-6) / (self.p_model + 1e-6)
        return aligned / aligned.sum(dim=-1, keepdim=True)


class EmbeddingProjection(nn.Sequential):
    """The projection head of SimMatch and CoMatch: ``Linear(d, d) - ReLU - Linear(d, dim)`` mapping backbone
    features to L2-normalised float32 embeddings (the layers themselves may run under autocast)."""

    def __init__(self, in_features: int, dim: int) -> None:
        super().__init__(nn.Linear(in_features, in_features), nn.ReLU(), nn.Linear(in_features, dim))

    def forward(self, features: Tensor) -> Tensor:
        return F.normalize(super().forward(features).float(), dim=-1)


class WeakStrongHead(LossHead):
    """Base of the heads that train ``strong_view`` on pseudo-labels from ``weak_view`` of the ``stream``.

    ``pseudo_labels_from``: ``student`` (the papers) or ``teacher``: the weak view's probabilities come from the EMA
    teacher (``method.ema.decay`` must be set), steadier targets against confirmation bias; the student then does not
    forward the weak view unless another head reads it. ``separate_weak_forward`` (student only): the weak view
    goes through the student in a forward of its own without autograd instead of the joint forward with the strong
    view (the papers' choice, whose backward also runs through the weak images although their targets carry no
    gradient): a FixMatch step then back-propagates through 16 + 112 images instead of 16 + 224, and the weak
    view's batch-norm statistics come from the weak batch alone. ``distribution_alignment``: align those
    probabilities with :class:`DistributionAlignment` (momentum ``alignment_momentum``) before pseudo-labels and
    masks are taken.
    """

    def __init__(
        self,
        weak_view: str = "weak",
        strong_view: str = "strong",
        stream: str = "unlabeled",
        pseudo_labels_from: str = "student",
        distribution_alignment: bool = False,
        alignment_momentum: float = 0.999,
        separate_weak_forward: bool = False,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if pseudo_labels_from not in SOURCES:
            raise ValueError(f"pseudo_labels_from must be one of {SOURCES}, got {pseudo_labels_from!r}")
        self.stream, self.weak_view, self.strong_view = stream, weak_view, strong_view
        self.pseudo_labels_from = pseudo_labels_from
        weak = (stream, weak_view)
        if pseudo_labels_from == "teacher":
            self.views, self.teacher_views = ((stream, strong_view),), (weak,)
        elif separate_weak_forward:
            self.views, self.detached_views = ((stream, strong_view),), (weak,)
        else:
            self.views = (weak, (stream, strong_view))
        self.distribution_alignment, self.alignment_momentum = distribution_alignment, alignment_momentum
        self.alignment: DistributionAlignment | None = None

    def build(self, in_features: int, num_classes: int) -> None:
        if self.distribution_alignment:
            self.alignment = DistributionAlignment(num_classes, self.alignment_momentum)

    def weak_probs(self, ctx: StepContext, temperature: float = 1.0) -> Tensor:
        """The weak view's class probabilities (float32, no gradient), aligned when ``distribution_alignment``."""
        if self.pseudo_labels_from == "teacher":
            logits = ctx.teacher_logits(self.stream, self.weak_view)
        else:
            logits = ctx.logits(self.stream, self.weak_view).detach()
        probs = torch.softmax(logits.float() / temperature, dim=-1)
        return self.alignment(probs) if self.alignment is not None else probs

    def strong_logits(self, ctx: StepContext) -> Tensor:
        return ctx.logits(self.stream, self.strong_view)
