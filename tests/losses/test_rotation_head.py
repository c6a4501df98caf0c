"""The rotation head's labels match the rotations applied."""

import torch

from sesemi.losses import rotate_batch


def test_rotation_labels_match_rotations():
    image = torch.arange(16.0).view(1, 1, 4, 4)
    images = image.repeat(4, 1, 1, 1)
    rotated = rotate_batch(images, torch.tensor([0, 1, 2, 3]))
    for k in range(4):
        assert torch.equal(rotated[k], torch.rot90(image[0], k, dims=(-2, -1)))
