"""FlexMatch (Zhang et al. 2021, "FlexMatch: Boosting Semi-Supervised Learning with Curriculum Pseudo Labeling").

FixMatch's fixed threshold ``tau`` (0.95) treats every class alike and admits almost nothing early in training.
Curriculum pseudo labeling (CPL) scales it per class by how well the model has learnt that class, estimated from
the unlabeled pool itself. Each unlabeled sample ``n`` keeps its latest *confident* prediction ``u_n`` (the argmax
of the weak view when ``max p >= tau``; unused until then). With ``N`` the pool size:

- the learning effect of class ``c``: ``sigma(c) = #{n : u_n = c}`` (paper Eq. 6);
- normalised with threshold warm-up (Eq. 11): ``beta(c) = sigma(c) / max(max_c' sigma(c'), N - sum_c' sigma(c'))``,
  so thresholds stay low while most of the pool is unused; without it (Eq. 7) ``beta(c) = sigma(c) / max sigma``;
- the class threshold ``T(c) = M(beta(c)) tau`` with the convex mapping ``M(x) = x / (2 - x)`` (Eq. 12; the paper
  also tries ``linear`` ``x`` and ``concave`` ``log2(x + 1)``).

A weak-view argmax ``c`` is the strong view's hard target when its confidence reaches ``T(c)``. As in the authors'
code, a step's mask uses the thresholds of the predictions seen before it, then the step's confident predictions
update ``u``. All thresholds start at 0 (every pseudo-label used) until the pool holds a confident prediction.

``u`` is a buffer indexed by the unlabeled sample's ``index`` in the pool, sized when training starts (8 bytes per
unlabeled image) and checkpointed; state loaded for a pool of another size (a pretrained checkpoint of a run on
other data) starts afresh. Under DDP every rank records every rank's predictions, so all ranks hold the same
thresholds. The thresholds are logged as one curve per class (``flexmatch_threshold/<class>``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from pytorch_lightning.utilities import rank_zero_warn
from torch import Tensor

from sesemi.errors import ConfigError
from sesemi.losses.base import StepContext, gather_across_ranks
from sesemi.losses.pseudo_label import masked_cross_entropy
from sesemi.losses.weak_strong import WeakStrongHead

UNUSED = -1  # u_n of a sample with no confident prediction yet

MAPPINGS: dict[str, Callable[[Tensor], Tensor]] = {
    "convex": lambda x: x / (2.0 - x),
    "linear": lambda x: x,
    "concave": lambda x: torch.log2(x + 1.0),
}


def curriculum_thresholds(
    pool_predictions: Tensor, num_classes: int, threshold: float, warmup: bool = True, mapping: str = "convex"
) -> Tensor:
    """``T(c) = M(beta(c)) tau`` for every class from the pool's latest confident predictions ``u`` (``-1``:
    unused), see the module docstring."""
    # [unused, sigma(0), sigma(1), ...]; one_hot rather than bincount, which has no deterministic CUDA kernel
    counts = F.one_hot(pool_predictions + 1, num_classes + 1).sum(0).float()
    learning_effect = counts[1:]
    normaliser = torch.maximum(learning_effect.max(), counts[0]) if warmup else learning_effect.max()
    return MAPPINGS[mapping](learning_effect / normaliser.clamp_min(1.0)) * threshold


class FlexMatchHead(WeakStrongHead):
    """FixMatch with FlexMatch's per-class curriculum thresholds (:func:`curriculum_thresholds`).

    ``threshold`` is ``tau`` (0.95), ``threshold_warmup`` selects Eq. 11 over Eq. 7, ``mapping`` is ``convex``,
    ``linear`` or ``concave``. ``pseudo_labels_from``, ``distribution_alignment`` and the view names: see
    :class:`~sesemi.losses.weak_strong.WeakStrongHead`.
    """

    def __init__(
        self, threshold: float = 0.95, threshold_warmup: bool = True, mapping: str = "convex", **kwargs
    ) -> None:
        super().__init__(**kwargs)
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {threshold}")
        if mapping not in MAPPINGS:
            raise ValueError(f"mapping must be one of {sorted(MAPPINGS)}, got {mapping!r}")
        self.threshold, self.threshold_warmup, self.mapping = threshold, threshold_warmup, mapping
        self.num_classes = 0

    def build(self, in_features: int, num_classes: int) -> None:
        super().build(in_features, num_classes)
        self.num_classes = num_classes
        self.register_buffer("pool_predictions", torch.full((0,), UNUSED, dtype=torch.long))  # u_n

    def class_thresholds(self) -> Tensor:
        return curriculum_thresholds(
            self.pool_predictions, self.num_classes, self.threshold, self.threshold_warmup, self.mapping
        )

    def on_fit_start(self, pool_size: int | None) -> None:
        if pool_size is None:
            raise ConfigError(
                "method.loss_heads",
                f"holds a FlexMatchHead (stream {self.stream!r}) but the run has no unlabeled pool",
                "give data an unlabeled stream (method.unlabeled_views) or drop the FlexMatch head",
            )
        if len(self.pool_predictions) not in (0, pool_size):
            # Resuming keeps the run's data settings, so this is state from another pool (run.pretrained_checkpoint
            # of a run on other data): its predictions are of other images.
            rank_zero_warn(
                f"FlexMatch: the loaded predictions are for an unlabeled pool of {len(self.pool_predictions)} images, "
                f"this run's has {pool_size}: they start afresh"
            )
        if len(self.pool_predictions) != pool_size:
            self.pool_predictions = self.pool_predictions.new_full((pool_size,), UNUSED)

    @torch.no_grad()
    def update(self, indices: Tensor, confidence: Tensor, labels: Tensor) -> None:
        """Record the confident predictions of a batch (all ranks' batches under DDP) as ``u`` of their samples."""
        if len(self.pool_predictions) == 0:
            raise RuntimeError("FlexMatchHead.on_fit_start(pool_size) must be called before its first step")
        indices, confidence, labels = (gather_across_ranks(t) for t in (indices, confidence, labels))
        confident = confidence >= self.threshold
        self.pool_predictions[indices[confident]] = labels[confident]

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        saved = state_dict.get(prefix + "pool_predictions")
        if saved is not None:  # the checkpoint's pool size; on_fit_start compares it with the data's
            self.pool_predictions = self.pool_predictions.new_full(saved.shape, UNUSED)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, ctx: StepContext) -> Tensor:
        confidence, labels = self.weak_probs(ctx).max(dim=-1)
        thresholds = self.class_thresholds()
        mask = (confidence >= thresholds[labels]).float()
        self.update(ctx.indices(self.stream), confidence, labels)
        ctx.report_pseudo_labels(labels, mask, self.stream)
        ctx.log("mask_ratio", mask.mean())
        if ctx.logging:
            ctx.log("pool_unused", (self.pool_predictions == UNUSED).float().mean())
            ctx.log_per_class("threshold", thresholds)
        return masked_cross_entropy(self.strong_logits(ctx), labels, mask)
