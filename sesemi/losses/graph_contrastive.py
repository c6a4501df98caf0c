"""CoMatch's graph-contrastive loss (Li, Xiong & Hoi 2021, "CoMatch: Semi-supervised Learning with Contrastive
Graph Regularization"), as a loss head beside a class-level pseudo-label head such as SoftMatch.

Unlabeled images whose pseudo-labels agree should also have embeddings that agree. A projection head maps backbone
features to L2-normalised embeddings ``z``. The *pseudo-label graph* joins each pair of unlabeled images by the
agreement of their weak-view class probabilities, cut below a threshold ``T``, with a self-loop:

    W^q_ij = 1 if i == j, else q_i . q_j if q_i . q_j >= T, else 0;   rows normalised to sum to 1.

The *embedding graph* is each strong-view embedding's similarity distribution over the batch's weak-view embeddings
(the target side, without gradient): ``W^z_ij = softmax_j(z^s_i . z^w_j / t)``. The loss is the cross-entropy
``mean_i H(W^q_i, W^z_i)``: images with the same pseudo-label are pulled together, the others apart, so the
backbone learns a clustered representation of the unlabeled pool that class pseudo-labels alone do not ask for.

CoMatch contrasts two strong views of each image; here the strong view is contrasted with the weak view the class
head already forwards (detached, as the keys of momentum contrast are), so the loss costs no extra forward
pass, and CoMatch's memory-smoothed pseudo-labels are left to the class head beside it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from sesemi.losses.base import StepContext
from sesemi.losses.weak_strong import EmbeddingProjection, WeakStrongHead


def pseudo_label_graph(probs: Tensor, threshold: float) -> Tensor:
    """``W^q``: pairwise agreement ``q_i . q_j`` of the class probabilities [B, C], zero below ``threshold``, one on
    the diagonal, each row normalised to sum to 1."""
    agreement = probs @ probs.t()
    graph = agreement * (agreement >= threshold)
    graph.fill_diagonal_(1.0)
    return graph / graph.sum(dim=1, keepdim=True)


class GraphContrastiveHead(WeakStrongHead):
    """CoMatch's graph-contrastive loss (see the module docstring) on the unlabeled stream.

    ``threshold`` (T of the pseudo-label graph), ``temperature`` (t of the embedding graph), ``projection_dim``.
    ``pseudo_labels_from``, ``distribution_alignment`` and the views: see
    :class:`~sesemi.losses.weak_strong.WeakStrongHead`; the weak view is read without gradients.
    """

    def __init__(self, threshold: float = 0.8, temperature: float = 0.2, projection_dim: int = 64, **kwargs) -> None:
        super().__init__(**kwargs)
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {threshold}")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.threshold, self.temperature, self.projection_dim = threshold, temperature, projection_dim

    def build(self, in_features: int, num_classes: int) -> None:
        super().build(in_features, num_classes)
        self.projection = EmbeddingProjection(in_features, self.projection_dim)

    def forward(self, ctx: StepContext) -> Tensor:
        probs = self.weak_probs(ctx)  # outside no_grad: it may run the joint forward the strong view's loss needs
        weak_features = (
            ctx.teacher_features(self.stream, self.weak_view)
            if self.pseudo_labels_from == "teacher"
            else ctx.features(self.stream, self.weak_view).detach()
        )
        with torch.no_grad():
            targets = pseudo_label_graph(probs, self.threshold)
            keys = self.projection(weak_features)
        queries = self.projection(ctx.features(self.stream, self.strong_view))
        with torch.autocast(queries.device.type, enabled=False):
            similarity = queries @ keys.t() / self.temperature
        ctx.log("graph_density", (targets > 0).float().mean())
        return F.cross_entropy(similarity, targets)
