"""Augmentation building blocks on torchvision transforms v2, usable from YAML through ``_target_``.

An augmentation in sesemi is any callable that maps one image (PIL or tensor) to a tensor. The data module applies
a *set of named views* to each sample, so a semi-supervised method can ask for e.g. a ``weak`` and a ``strong``
view of the same unlabeled image.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from PIL import Image
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

Transform = Callable[[Any], torch.Tensor]


class MultiView:
    """Apply several named transforms to the same image and return ``{name: view}``."""

    def __init__(self, views: Mapping[str, Transform]) -> None:
        if not views:
            raise ValueError("MultiView needs at least one view")
        self.views = dict(views)

    def __call__(self, image: Any) -> dict[str, torch.Tensor]:
        return {name: transform(image) for name, transform in self.views.items()}

    def __repr__(self) -> str:
        return f"MultiView({list(self.views)})"


class NormalizedTensor:
    """PIL/uint8 image -> float tensor in [0, 1] -> normalized: ``v2.ToImage``, ``v2.ToDtype(float32, scale=True)``
    and ``v2.Normalize(mean, std)``, fused for 8-bit PIL images (the same numbers, a third of the time: this runs
    for every view of every training image) and done by those three transforms for any other input."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.mean, self.std = list(mean), list(std)
        self.transforms = v2.Compose(
            [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(self.mean, self.std)]
        )
        self._mean = torch.tensor(self.mean, dtype=torch.float32).view(-1, 1, 1)
        self._std = torch.tensor(self.std, dtype=torch.float32).view(-1, 1, 1)

    def __call__(self, image: Any) -> torch.Tensor:
        if isinstance(image, Image.Image):
            x = TF.pil_to_tensor(image)
            channels = (1, x.shape[0])
            if x.dtype == torch.uint8 and self._mean.shape[0] in channels and self._std.shape[0] in channels:
                x = x.to(torch.float32).mul_(1.0 / 255).sub_(self._mean).div_(self._std)
                return x.as_subclass(tv_tensors.Image)
        return self.transforms(image)

    def __repr__(self) -> str:
        return f"NormalizedTensor(mean={self.mean}, std={self.std})"


def to_normalized_tensor(mean: Sequence[float], std: Sequence[float]) -> NormalizedTensor:
    """PIL/uint8 image -> float tensor in [0, 1] -> normalized; the last steps of every pipeline."""
    return NormalizedTensor(mean, std)


def pipeline(
    steps: Sequence[Transform],
    mean: Sequence[float],
    std: Sequence[float],
    after: Sequence[Transform] = (),
) -> v2.Compose:
    """``steps`` on the image, then to a normalized tensor, then ``after`` (tensor-only steps such as cutout)."""
    return v2.Compose([*list(steps), to_normalized_tensor(mean, std), *list(after)])


def cutout(size: float = 0.5, p: float = 1.0) -> v2.RandomErasing:
    """FixMatch's Cutout: erase one square-ish patch of up to ``size`` (fraction of side) with zeros."""
    return v2.RandomErasing(p=p, scale=(0.02, size * size), ratio=(0.5, 2.0), value=0)
