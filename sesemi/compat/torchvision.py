"""torchvision internals used by sesemi's batched augmentation (checked against torchvision 0.29), and why.

``v2.RandAugment`` draws one list of operations per call, so on a batch every image would get the same ones. The
batched equivalent (:class:`sesemi.data.batched.BatchRandAugment`) draws per image, groups the images by drawn
operation and applies each operation once per group, with torchvision's own operation table and kernels so the
pixels and the distribution of operations are RandAugment's. Neither is public API.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torchvision.transforms import v2

MagnitudesFn = Callable[[int, int, int], "torch.Tensor | None"]


def augmentation_space(transform: v2.RandAugment) -> dict[str, tuple[MagnitudesFn, bool]]:
    """RandAugment's operations: ``name -> (magnitudes(num_bins, height, width), signed)``."""
    return dict(transform._AUGMENTATION_SPACE)


def apply_augmentation(transform: v2.RandAugment, images: torch.Tensor, name: str, magnitude: float) -> torch.Tensor:
    """Apply one RandAugment operation with one magnitude to a batch of images (``[N, C, H, W]``)."""
    return transform._apply_image_or_video_transform(
        images, name, magnitude, interpolation=transform.interpolation, fill=transform._fill
    )


def fill_value(transform: Any) -> Any:
    """The fill a torchvision transform uses for plain tensors (its ``fill`` argument, normalised per input type)."""
    fills = transform._fill
    return fills.get(torch.Tensor, fills.get("others")) if isinstance(fills, dict) else fills
