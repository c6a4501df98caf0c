"""Consistency regularisation: Pi-model (Laine & Aila 2017) and Mean Teacher (Tarvainen & Valpola 2017).

Both penalise the divergence between the student's prediction on one view of an image and a target prediction on
another view of the same image. In the Pi-model the target is the student itself on a second stochastic view (a
separate augmentation draw, e.g. ``unlabeled_views: {weak: ..., weak2: ${augment.weak}}``); in Mean Teacher it is the
EMA of the student's weights (the training module's EMA, ``method.ema.decay``). The target never receives gradients.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from sesemi.losses.base import LossHead, StepContext


def softmax_mse(student_logits: Tensor, target_logits: Tensor) -> Tensor:
    """Mean squared error between class probabilities, averaged over samples and classes.

    This is the consistency cost of both papers (``||p - q||^2 / C``, averaged over the batch). It is bounded, so it
    tolerates the wrong targets of early training better than KL.
    """
    return F.mse_loss(torch.softmax(student_logits.float(), -1), torch.softmax(target_logits.float(), -1))


def softmax_kl(student_logits: Tensor, target_logits: Tensor) -> Tensor:
    """``KL(target || student)`` of the two softmax distributions, summed over classes, averaged over samples."""
    return F.kl_div(
        torch.log_softmax(student_logits.float(), -1),
        torch.log_softmax(target_logits.float(), -1),
        reduction="batchmean",
        log_target=True,
    )


DIVERGENCES: dict[str, Callable[[Tensor, Tensor], Tensor]] = {"mse": softmax_mse, "kl": softmax_kl}
MODES = ("pi", "mean_teacher")


class ConsistencyHead(LossHead):
    """Divergence between the student on ``views[0]`` and a detached target on ``views[1]`` of the same images.

    ``mode="pi"``: the target is the student on ``views[1]`` (both views share the joint student forward, so batch-norm
    sees them together). ``mode="mean_teacher"``: the target is the EMA teacher on ``views[1]``; the training module
    must keep an EMA (``method.ema.decay``). ``divergence`` is ``"mse"`` (on probabilities) or ``"kl"``. Both papers
    ramp the weight up with the sigmoid schedule (``rampup_steps``).
    """

    def __init__(
        self,
        mode: str = "pi",
        divergence: str = "mse",
        stream: str = "unlabeled",
        views: Sequence[str] = ("weak", "weak2"),
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if mode not in MODES:
            raise ValueError(f"mode must be one of {list(MODES)}, got {mode!r}")
        if divergence not in DIVERGENCES:
            raise ValueError(f"divergence must be one of {sorted(DIVERGENCES)}, got {divergence!r}")
        if len(views) != 2:
            raise ValueError(f"views must name two views (student, target), got {list(views)}")
        self.mode, self.divergence = mode, divergence
        self.stream = stream
        self.student_view, self.target_view = views
        if mode == "pi" and self.student_view == self.target_view:
            raise ValueError(
                f"the Pi-model needs two different views (two augmentation draws), got {list(views)}; add e.g. "
                "weak2: ${augment.weak} to method.unlabeled_views"
            )
        # The teacher's view needs no student forward, so only the Pi-model declares both.
        student_views = (self.student_view, self.target_view) if mode == "pi" else (self.student_view,)
        self.views = tuple((stream, v) for v in student_views)

    def target_logits(self, ctx: StepContext) -> Tensor:
        if self.mode == "mean_teacher":
            return ctx.teacher_logits(self.stream, self.target_view)
        return ctx.logits(self.stream, self.target_view).detach()

    def forward(self, ctx: StepContext) -> Tensor:
        target = self.target_logits(ctx)
        if ctx.logging:  # the target's argmax is the implicit pseudo-label; every sample is used
            ctx.report_pseudo_labels(target.argmax(-1), torch.ones(len(target), device=target.device), self.stream)
        return DIVERGENCES[self.divergence](ctx.logits(self.stream, self.student_view), target)
