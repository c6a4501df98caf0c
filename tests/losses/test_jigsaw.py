"""JigsawHead: the permutation set, the vectorised tile shuffle, and a forward through a real backbone."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from sesemi.losses import JigsawHead, StepContext, jigsaw_permutations, shuffle_tiles


def _unshuffle(shuffled: torch.Tensor, order: list[int], grid: int) -> torch.Tensor:
    """Put output tile j back at position order[j], tile by tile (the slow, obvious way)."""
    _, h, w = shuffled.shape
    th, tw = h // grid, w // grid
    out = shuffled.clone()
    for j, src in enumerate(order):
        r, col = divmod(j, grid)
        sr, sc = divmod(src, grid)
        tile = shuffled[:, r * th : (r + 1) * th, col * tw : (col + 1) * tw]
        out[:, sr * th : (sr + 1) * th, sc * tw : (sc + 1) * tw] = tile
    return out


@pytest.mark.parametrize(("grid", "size"), [(2, 8), (3, 9), (2, 7)])
def test_tiles_are_permuted_exactly_as_the_label_says(grid: int, size: int):
    permutations = jigsaw_permutations(grid, 12 if grid == 3 else None)
    images = torch.randn(len(permutations), 2, size, size)
    labels = torch.randperm(len(permutations))
    shuffled = shuffle_tiles(images, permutations[labels], grid)
    assert shuffled.shape == images.shape
    for i, label in enumerate(labels.tolist()):
        order = permutations[label].tolist()
        assert torch.equal(_unshuffle(shuffled[i], order, grid), images[i])
        if order != sorted(order):
            assert not torch.equal(shuffled[i], images[i])
    cut = size // grid * grid  # the remainder strip of a non-divisible image stays in place
    assert torch.equal(shuffled[..., cut:, :], images[..., cut:, :])
    assert torch.equal(shuffled[..., :, cut:], images[..., :, cut:])


def test_tile_j_of_the_output_is_tile_order_j_of_the_input():
    image = torch.arange(4.0).view(1, 1, 2, 2)  # one pixel per tile: tile k holds the value k
    out = shuffle_tiles(image, torch.tensor([[2, 0, 3, 1]]), grid=2)
    assert out.flatten().tolist() == [2.0, 0.0, 3.0, 1.0]


def test_permutation_sets_are_distinct_complete_and_seeded():
    every = jigsaw_permutations(2)
    assert every.shape == (24, 4) and len({tuple(p) for p in every.tolist()}) == 24
    assert torch.equal(every.sort(dim=1).values, torch.arange(4).expand(24, 4))
    subset = jigsaw_permutations(3, 100, seed=1)
    assert subset.shape == (100, 9) and len({tuple(p) for p in subset.tolist()}) == 100
    assert torch.equal(subset.sort(dim=1).values, torch.arange(9).expand(100, 9))
    assert torch.equal(subset, jigsaw_permutations(3, 100, seed=1))
    assert not torch.equal(subset, jigsaw_permutations(3, 100, seed=2))
    small = jigsaw_permutations(2, 10, seed=0)
    assert len({tuple(p) for p in small.tolist()}) == 10
    with pytest.raises(ValueError, match="num_permutations"):
        jigsaw_permutations(2, math.factorial(4) + 1)


def test_head_builds_its_classifier_and_predicts_the_permutation():
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Flatten())  # 4 x 8 x 8 features
    head = JigsawHead(grid=2)
    head.build(in_features=256, num_classes=10)
    assert head.classifier.out_features == 24 and "permutations" in head.state_dict()
    batch = {"labeled": {"weak": torch.randn(3, 1, 8, 8)}, "unlabeled": {"weak": torch.randn(5, 1, 8, 8)}}
    ctx = StepContext(batch, backbone, nn.Identity(), 0, list(head.views))
    loss = head(ctx)
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert 0.0 <= ctx.metrics["acc"].item() <= 1.0
    loss.backward()
    assert head.classifier.weight.grad is not None and backbone[0].weight.grad is not None
