"""The torchvision internals sesemi's batched RandAugment relies on (sesemi/compat/torchvision.py) are still there.

If one of these fails after a torchvision upgrade, the named internal moved: update sesemi/compat/torchvision.py.
"""

from __future__ import annotations

import torch
from torchvision.transforms import v2

from sesemi.compat import torchvision as compat


def test_randaugment_still_has_its_operation_table():
    space = compat.augmentation_space(v2.RandAugment())
    assert {"Identity", "Rotate", "Posterize", "Equalize", "ShearX"} <= set(space), "RandAugment._AUGMENTATION_SPACE"
    magnitudes_fn, signed = space["Rotate"]
    assert signed and magnitudes_fn(31, 28, 28).shape == (31,)


def test_randaugment_still_applies_one_operation_to_a_batch():
    transform = v2.RandAugment(fill=7)
    images = torch.randint(0, 256, (3, 1, 8, 8), dtype=torch.uint8)
    out = compat.apply_augmentation(transform, images, "Rotate", 90.0)  # _apply_image_or_video_transform
    assert torch.equal(out, torch.rot90(images, 1, (-2, -1)).masked_fill(out == 7, 7))
    assert compat.fill_value(transform) == 7  # _fill, per input type
