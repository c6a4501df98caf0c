"""SESEMI's self-supervised rotation prediction: rotate images by 0/90/180/270 degrees and predict which."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sesemi.losses.base import LossHead, StepContext


def rotate_batch(images: Tensor, labels: Tensor) -> Tensor:
    """Rotate ``images[i]`` by ``labels[i] * 90`` degrees counter-clockwise (square images)."""
    out = torch.empty_like(images)
    for k in range(4):
        mask = labels == k
        if mask.any():
            out[mask] = torch.rot90(images[mask], k, dims=(-2, -1))
    return out


def all_rotations(images: Tensor) -> tuple[Tensor, Tensor]:
    """Every image under each of the four rotations: the rotated batch (rotation-major: all images at 0 degrees,
    then all at 90, ...) and each copy's rotation label."""
    rotated = torch.cat([torch.rot90(images, k, dims=(-2, -1)) for k in range(4)])
    return rotated, torch.arange(4, device=images.device).repeat_interleave(len(images))


class RotationHead(LossHead):
    """Predict the rotation of each image from the shared backbone's features with a 4-way linear classifier.

    Images come from every ``(stream, view)`` in ``sources`` (labels are not used, so labeled images count too).
    Each image gets one random rotation per step; ``all_rotations=True`` uses all four (4x the compute).
    """

    def __init__(
        self,
        sources: Sequence[Sequence[str]] = (("labeled", "weak"), ("unlabeled", "weak")),
        all_rotations: bool = False,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.sources = [tuple(s) for s in sources]
        self.all_rotations = all_rotations
        self.classifier: nn.Module | None = None

    def build(self, in_features: int, num_classes: int) -> None:
        self.classifier = nn.Linear(in_features, 4)

    def forward(self, ctx: StepContext) -> Tensor:
        images = torch.cat([ctx.images(s, v) for s, v in self.sources if s in ctx.batch])
        if self.all_rotations:
            rotated, labels = all_rotations(images)
        else:
            labels = torch.randint(0, 4, (len(images),), device=images.device)
            rotated = rotate_batch(images, labels)
        logits = self.classifier(ctx.backbone(rotated))
        ctx.log("acc", (logits.argmax(1) == labels).float().mean())
        return F.cross_entropy(logits, labels)


class JointRotationHead(LossHead):
    """Self-supervised label augmentation (SLA; Lee, Hwang & Shin 2020) as an auxiliary task: a linear classifier
    over every (class, rotation) pair learns each labeled image under all four rotations,

        loss = mean over images i and rotations r of CE(W f(rot_r(x_i)), 4 * y_i + r),

    so the shared backbone must tell the classes apart at every orientation (rotation prediction alone never sees a
    label). SLA makes this joint classifier *the* classifier and averages its four rotations at inference; here the
    class head and inference are unchanged, and the joint classifier is used only for this loss.
    """

    def __init__(self, stream: str = "labeled", view: str = "weak", **kwargs) -> None:
        super().__init__(**kwargs)
        self.stream, self.view = stream, view
        self.classifier: nn.Module | None = None

    def build(self, in_features: int, num_classes: int) -> None:
        self.classifier = nn.Linear(in_features, 4 * num_classes)

    def forward(self, ctx: StepContext) -> Tensor:
        images, targets = ctx.images(self.stream, self.view), ctx.targets(self.stream)
        rotated, rotations = all_rotations(images)
        logits = self.classifier(ctx.backbone(rotated))
        joint = 4 * targets.repeat(4) + rotations
        ctx.log("acc", (logits.argmax(1) == joint).float().mean())
        return F.cross_entropy(logits, joint)
