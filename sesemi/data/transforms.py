"""Augmentation building blocks on torchvision transforms v2, usable from YAML through ``_target_``.

An augmentation in sesemi is any callable that maps one image (PIL or tensor) to a tensor. The data module applies
a *set of named views* to each sample, so a semi-supervised method can ask for e.g. a ``weak`` and a ``strong``
view of the same unlabeled image.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import default_collate
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from sesemi.data.batched import BatchPipeline

Transform = Callable[[Any], torch.Tensor]
_RAW = "_uint8_image"  # a sample's image for its batched views, replaced by them when the batch is collated


class MultiView:
    """Apply several named transforms to the same image and return ``{name: view}``.

    Views made by :func:`sesemi.data.batch_pipeline` are applied to whole batches instead: each sample then carries
    its image as an 8-bit tensor and :meth:`collate` (the loader's ``collate_fn``) stacks the samples and turns those
    images into the batched views."""

    def __init__(self, views: Mapping[str, Transform]) -> None:
        if not views:
            raise ValueError("MultiView needs at least one view")
        self.views = {name: t for name, t in views.items() if not isinstance(t, BatchPipeline)}
        self.batch_views = {name: t for name, t in views.items() if isinstance(t, BatchPipeline)}

    def __call__(self, image: Any) -> dict[str, torch.Tensor]:
        sample = {name: transform(image) for name, transform in self.views.items()}
        if self.batch_views:
            sample[_RAW] = TF.to_dtype(TF.to_image(image), torch.uint8, scale=True).as_subclass(torch.Tensor)
        return sample

    def collate(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        """``default_collate``, then the batched views of the stacked 8-bit images."""
        if not self.batch_views:
            return default_collate(samples)
        sizes = {tuple(s[_RAW].shape) for s in samples}
        if len(sizes) > 1:
            raise ValueError(
                f"batched views {sorted(self.batch_views)} need images of one size, got {sorted(sizes)}: resize them "
                "in the dataset or use sesemi.data.pipeline (per image) for these views"
            )
        batch = default_collate(samples)
        images = batch.pop(_RAW)
        for name, transform in self.batch_views.items():
            batch[name] = transform(images)
        return batch

    def __repr__(self) -> str:
        return f"MultiView({[*self.views, *self.batch_views]})"


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


@lru_cache(maxsize=256)
def _padded_index(n: int, before: int, after: int, mode: str) -> np.ndarray:
    """Which source row (column) each row of an ``n``-row axis padded by ``(before, after)`` in ``mode`` shows."""
    return np.pad(np.arange(n), (before, after), mode=mode)


class FastRandomCrop:
    """``v2.RandomCrop`` for 8-bit grayscale and RGB PIL images without torchvision's generic dispatch and full-image
    padding: the same random draws and the same pixels (it only reads the window it returns), several times faster
    on small images. Other inputs and settings (palette images, a non-zero constant fill) go to the transform."""

    def __init__(self, transform: v2.RandomCrop) -> None:
        self.transform = transform

    def __repr__(self) -> str:
        return f"Fast{self.transform!r}"

    def __call__(self, image: Any) -> Any:
        t = self.transform
        if not (isinstance(image, Image.Image) and image.mode in ("L", "RGB")):
            return t(image)
        fill = t._fill.get(Image.Image, t._fill.get("others"))
        pad_left, pad_right, pad_top, pad_bottom = t.padding if t.padding is not None else (0, 0, 0, 0)
        constant = t.padding_mode == "constant"
        if min(pad_left, pad_right, pad_top, pad_bottom) < 0 or (constant and fill not in (0, 0.0)):
            return t(image)
        height, width = image.height, image.width
        crop_height, crop_width = t.size
        padded_height, padded_width = height + pad_top + pad_bottom, width + pad_left + pad_right
        if t.pad_if_needed:  # as v2.RandomCrop.make_params
            if padded_height < crop_height:
                diff = crop_height - padded_height
                pad_top, pad_bottom, padded_height = pad_top + diff, pad_bottom + diff, padded_height + 2 * diff
            if padded_width < crop_width:
                diff = crop_width - padded_width
                pad_left, pad_right, padded_width = pad_left + diff, pad_right + diff, padded_width + 2 * diff
        if padded_height < crop_height or padded_width < crop_width:
            return t(image)  # its error
        top = int(torch.randint(0, padded_height - crop_height + 1, size=())) if padded_height > crop_height else 0
        left = int(torch.randint(0, padded_width - crop_width + 1, size=())) if padded_width > crop_width else 0
        if not (pad_left or pad_right or pad_top or pad_bottom) and (crop_height, crop_width) == (height, width):
            return image
        pixels = np.asarray(image)
        if constant:  # zero fill: the window's part inside the image, zeros around it
            out = np.zeros((crop_height, crop_width, *pixels.shape[2:]), dtype=pixels.dtype)
            r0, c0 = top - pad_top, left - pad_left
            r_lo, r_hi = max(r0, 0), min(r0 + crop_height, height)
            c_lo, c_hi = max(c0, 0), min(c0 + crop_width, width)
            if r_lo < r_hi and c_lo < c_hi:
                out[r_lo - r0 : r_hi - r0, c_lo - c0 : c_hi - c0] = pixels[r_lo:r_hi, c_lo:c_hi]
        else:
            rows = _padded_index(height, pad_top, pad_bottom, t.padding_mode)[top : top + crop_height]
            cols = _padded_index(width, pad_left, pad_right, t.padding_mode)[left : left + crop_width]
            out = pixels[rows[:, None], cols]
        return Image.fromarray(np.ascontiguousarray(out))


class FastHorizontalFlip:
    """``v2.RandomHorizontalFlip`` for PIL images without the generic dispatch (the same random draw and pixels)."""

    def __init__(self, transform: v2.RandomHorizontalFlip) -> None:
        self.transform = transform

    def __repr__(self) -> str:
        return f"Fast{self.transform!r}"

    def __call__(self, image: Any) -> Any:
        if not isinstance(image, Image.Image):
            return self.transform(image)
        if torch.rand(1) >= self.transform.p:
            return image
        return image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)


class DirectRandomErasing:
    """``v2.RandomErasing`` on one image tensor, calling its own ``make_params``/``transform`` without the input
    flattening of ``forward`` (the same random draws and pixels)."""

    def __init__(self, transform: v2.RandomErasing) -> None:
        self.transform = transform

    def __repr__(self) -> str:
        return f"Direct{self.transform!r}"

    def __call__(self, image: Any) -> Any:
        t = self.transform
        if not isinstance(image, torch.Tensor):
            return t(image)
        t.check_inputs([image])
        if torch.rand(1) >= t.p:
            return image
        return t.transform(image, t.make_params([image]))


def fast(step: Transform) -> Transform:
    """The fast equivalent of a torchvision transform where sesemi has one (exact types only), else the step."""
    kind = type(step)
    if kind is v2.RandomCrop:
        return FastRandomCrop(step)
    if kind is v2.RandomHorizontalFlip:
        return FastHorizontalFlip(step)
    if kind is v2.RandomErasing:
        return DirectRandomErasing(step)
    return step


def pipeline(
    steps: Sequence[Transform],
    mean: Sequence[float],
    std: Sequence[float],
    after: Sequence[Transform] = (),
) -> v2.Compose:
    """``steps`` on the image, then to a normalized tensor, then ``after`` (tensor-only steps such as cutout).

    Random crops, horizontal flips and erasing run through sesemi's equivalents of torchvision's (:func:`fast`): the
    same random numbers and pixels for a fraction of the per-image cost, which dominates on small images."""
    return v2.Compose([*map(fast, steps), to_normalized_tensor(mean, std), *map(fast, after)])


def cutout(size: float = 0.5, p: float = 1.0) -> v2.RandomErasing:
    """FixMatch's Cutout: erase one square-ish patch of up to ``size`` (fraction of side) with zeros."""
    return v2.RandomErasing(p=p, scale=(0.02, size * size), ratio=(0.5, 2.0), value=0)
