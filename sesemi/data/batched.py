"""Augmentation of a whole batch at once on 8-bit tensors, in the loader workers.

A per-image pipeline pays torchvision's per-call dispatch for every step of every view of every image; on small
images (28x28) that Python overhead is most of a strong view's cost, and on a machine with few cores the loader
workers take those cores from the network. A batched view runs each step once per batch, with per-image random
draws: every image still gets its own flip, crop offset, RandAugment operations and sign, and cutout box, from the
same distributions as the per-image pipeline (the pixels of a given seed differ, the augmentation does not).

Use it by writing ``sesemi.data.batch_pipeline`` where a view's config says ``sesemi.data.pipeline``, with the same
``steps``, ``mean``, ``std`` and ``after``. Supported steps: ``v2.RandomHorizontalFlip``, ``v2.RandomCrop``
(constant, edge or reflect padding), ``v2.RandAugment`` and, after normalisation, ``v2.RandomErasing`` (sesemi's
``cutout``). The images of a stream must all have one size (they are stacked before the view is applied).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.transforms import v2

from sesemi.compat.torchvision import apply_augmentation, augmentation_space, fill_value

BatchStep = Callable[[Tensor], Tensor]

_PADDING_MODES = {"constant": "constant", "edge": "replicate", "reflect": "reflect"}


class BatchHorizontalFlip:
    """Each image flipped left-right with probability ``p``."""

    def __init__(self, transform: v2.RandomHorizontalFlip) -> None:
        self.p = transform.p

    def __call__(self, images: Tensor) -> Tensor:
        flip = torch.rand(len(images)) < self.p
        return torch.where(flip[:, None, None, None], images.flip(-1), images)


class BatchRandomCrop:
    """``v2.RandomCrop`` with padding: each image gets its own window of the padded image."""

    def __init__(self, transform: v2.RandomCrop) -> None:
        if transform.pad_if_needed:
            raise ValueError("batched RandomCrop does not support pad_if_needed; pad every image to one size first")
        if transform.padding_mode not in _PADDING_MODES:
            raise ValueError(
                f"batched RandomCrop supports padding_mode {sorted(_PADDING_MODES)}, not {transform.padding_mode!r}"
            )
        self.size = tuple(transform.size)
        self.padding = tuple(transform.padding) if transform.padding is not None else (0, 0, 0, 0)  # l, r, t, b
        self.mode = _PADDING_MODES[transform.padding_mode]
        fill = fill_value(transform)
        self.fill = float(fill[0] if isinstance(fill, (list, tuple)) else fill or 0)

    def __call__(self, images: Tensor) -> Tensor:
        left, right, top, bottom = self.padding
        if self.mode == "constant":
            padded = F.pad(images, (left, right, top, bottom), value=self.fill)
        else:  # replicate/reflect pad only floating tensors
            padded = F.pad(images.float(), (left, right, top, bottom), mode=self.mode).to(images.dtype)
        n, height, width = len(images), *self.size
        if padded.shape[-2] < height or padded.shape[-1] < width:
            raise ValueError(f"crop size {self.size} is larger than the padded image {tuple(padded.shape[-2:])}")
        tops = torch.randint(0, padded.shape[-2] - height + 1, (n,))
        lefts = torch.randint(0, padded.shape[-1] - width + 1, (n,))
        rows = (tops[:, None] + torch.arange(height))[:, None, :, None]  # [N, 1, H, 1]
        cols = (lefts[:, None] + torch.arange(width))[:, None, None, :]  # [N, 1, 1, W]
        batch = torch.arange(n)[:, None, None, None]
        channels = torch.arange(images.shape[1])[None, :, None, None]
        return padded[batch, channels, rows, cols]


class BatchRandAugment:
    """``v2.RandAugment``: ``num_ops`` operations drawn per image (uniformly, with replacement) at the transform's
    magnitude, signed operations negated with probability 1/2, applied with torchvision's own kernels to each group
    of images that drew the same operation and sign."""

    def __init__(self, transform: v2.RandAugment) -> None:
        self.transform = transform
        self.ops = list(augmentation_space(transform).items())

    def _magnitude(self, index: int, height: int, width: int) -> tuple[float, bool]:
        magnitudes_fn, signed = self.ops[index][1]
        magnitudes = magnitudes_fn(self.transform.num_magnitude_bins, height, width)
        if magnitudes is None or magnitudes.ndim == 0:
            return 0.0, False
        return float(magnitudes[self.transform.magnitude]), signed

    def __call__(self, images: Tensor) -> Tensor:
        n, height, width = len(images), images.shape[-2], images.shape[-1]
        images = images.clone()
        for _ in range(self.transform.num_ops):
            ops = torch.randint(len(self.ops), (n,))
            negate = torch.rand(n) <= 0.5
            for index in ops.unique().tolist():
                magnitude, signed = self._magnitude(index, height, width)
                chosen = ops == index
                groups = [(chosen & negate, -magnitude), (chosen & ~negate, magnitude)]
                if not signed:
                    groups = [(chosen, magnitude)]
                for members, value in groups:
                    if members.any():
                        images[members] = apply_augmentation(self.transform, images[members], self.ops[index][0], value)
        return images


class BatchRandomErasing:
    """``v2.RandomErasing`` with a constant value (sesemi's ``cutout``): per image, with probability ``p``, a box of
    area ``scale`` and aspect ``ratio`` (up to 10 tries to fit, as torchvision) set to ``value``."""

    def __init__(self, transform: v2.RandomErasing) -> None:
        if transform.value is None:
            raise ValueError("batched RandomErasing needs a constant value (value='random' is per-pixel noise)")
        self.p, self.scale, self.value = transform.p, transform.scale, transform.value
        self.log_ratio = (math.log(transform.ratio[0]), math.log(transform.ratio[1]))

    def __call__(self, images: Tensor) -> Tensor:
        n, height, width = len(images), images.shape[-2], images.shape[-1]
        tries = 10
        areas = height * width * torch.empty(n, tries).uniform_(*self.scale)
        ratios = torch.exp(torch.empty(n, tries).uniform_(*self.log_ratio))
        h = torch.sqrt(areas * ratios).round().long()
        w = torch.sqrt(areas / ratios).round().long()
        fits = (h < height) & (w < width)
        first = fits.long().argmax(dim=1)  # the first try that fits, as torchvision's loop
        h, w = h.gather(1, first[:, None])[:, 0], w.gather(1, first[:, None])[:, 0]
        erase = fits.any(dim=1) & (torch.rand(n) < self.p)
        top = (torch.rand(n) * (height - h + 1)).long()
        left = (torch.rand(n) * (width - w + 1)).long()
        rows = torch.arange(height)[None, :, None]
        cols = torch.arange(width)[None, None, :]
        in_rows = (rows >= top[:, None, None]) & (rows < (top + h)[:, None, None])
        in_cols = (cols >= left[:, None, None]) & (cols < (left + w)[:, None, None])
        inside = in_rows & in_cols & erase[:, None, None]
        value = torch.as_tensor(self.value, dtype=images.dtype).reshape(1, -1, 1, 1)
        return torch.where(inside[:, None], value, images)


def batched(step: object) -> BatchStep:
    """The batched equivalent of a torchvision v2 transform (exact types only)."""
    kinds: dict[type, Callable[[object], BatchStep]] = {
        v2.RandomHorizontalFlip: BatchHorizontalFlip,
        v2.RandomCrop: BatchRandomCrop,
        v2.RandAugment: BatchRandAugment,
        v2.RandomErasing: BatchRandomErasing,
    }
    if type(step) not in kinds:
        supported = ", ".join(f"v2.{k.__name__}" for k in kinds)
        raise ValueError(
            f"sesemi.data.batch_pipeline has no batched {type(step).__name__}: it supports {supported}; "
            "use sesemi.data.pipeline (per image) for this view"
        )
    return kinds[type(step)](step)


class BatchPipeline:
    """``steps`` on a uint8 batch ``[N, C, H, W]``, then to normalized float, then ``after`` (e.g. cutout)."""

    def __init__(
        self, steps: Sequence[object], mean: Sequence[float], std: Sequence[float], after: Sequence[object] = ()
    ) -> None:
        self.steps = [batched(s) for s in steps]
        self.after = [batched(s) for s in after]
        self.mean = torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1)

    def __call__(self, images: Tensor) -> Tensor:
        for step in self.steps:
            images = step(images)
        images = images.float().div_(255).sub_(self.mean).div_(self.std)
        for step in self.after:
            images = step(images)
        return images

    def __repr__(self) -> str:
        names = [type(s).__name__ for s in (*self.steps, *self.after)]
        return f"BatchPipeline({names})"


def batch_pipeline(
    steps: Sequence[object], mean: Sequence[float], std: Sequence[float], after: Sequence[object] = ()
) -> BatchPipeline:
    """A view applied to whole batches in the loader workers: the same arguments as :func:`sesemi.data.pipeline`."""
    return BatchPipeline(steps, mean, std, after)
