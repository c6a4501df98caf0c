"""Jigsaw puzzles as a self-supervised auxiliary task (after Noroozi & Favaro 2016).

Each image is cut into ``grid x grid`` tiles, the tiles are shuffled with one of a fixed set of permutations, and a
linear classifier on the shared backbone's features predicts which permutation was applied. Unlike Noroozi & Favaro's
context-free network (one backbone pass per tile), the reassembled image goes through the backbone once, as in
SESEMI's rotation task, so the auxiliary task regularises the very features the classifier uses.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sesemi.losses.base import LossHead, StepContext


def jigsaw_permutations(grid: int, num_permutations: int | None = None, seed: int = 0) -> Tensor:
    """A fixed ``(num_permutations, grid**2)`` set of distinct tile orders.

    ``None`` (or ``(grid**2)!``) gives every permutation in lexicographic order (24 for a 2x2 grid). A smaller number
    gives a subset drawn with ``seed``, so the same config always builds the same classes. Noroozi & Favaro picked
    their 1000 permutations of 3x3 tiles for large Hamming distance; a random subset of 9! is close to that already
    (the expected distance between two random permutations of 9 is 8).
    """
    n = grid * grid
    total = math.factorial(n)
    if num_permutations is None:
        num_permutations = total
    if not 2 <= num_permutations <= total:
        raise ValueError(f"num_permutations must be in [2, {total}] for a {grid}x{grid} grid, got {num_permutations}")
    generator = torch.Generator().manual_seed(seed)
    if total <= 40320:  # up to 8! orders: enumerate, then choose
        every = torch.tensor(list(itertools.permutations(range(n))))
        if num_permutations == total:
            return every
        return every[torch.randperm(total, generator=generator)[:num_permutations]]
    chosen: dict[tuple[int, ...], None] = {}
    while len(chosen) < num_permutations:  # rejection sampling: collisions are rare when total is this large
        chosen.setdefault(tuple(torch.randperm(n, generator=generator).tolist()))
    return torch.tensor(list(chosen))


def shuffle_tiles(images: Tensor, orders: Tensor, grid: int) -> Tensor:
    """Rearrange ``grid x grid`` tiles of each image: output tile ``j`` (row-major) is input tile ``orders[i, j]``.

    ``images`` is ``(B, C, H, W)`` and ``orders`` ``(B, grid**2)``. When ``H`` or ``W`` is not a multiple of ``grid``,
    the bottom/right remainder stays in place, so the image keeps its size.
    """
    b, c, h, w = images.shape
    th, tw = h // grid, w // grid
    if th == 0 or tw == 0:
        raise ValueError(f"images of {h}x{w} pixels are too small for a {grid}x{grid} jigsaw")
    core = images[..., : th * grid, : tw * grid]
    tiles = core.reshape(b, c, grid, th, grid, tw).permute(0, 2, 4, 1, 3, 5).reshape(b, grid * grid, c, th, tw)
    tiles = tiles[torch.arange(b, device=images.device)[:, None], orders]
    shuffled = tiles.reshape(b, grid, grid, c, th, tw).permute(0, 3, 1, 4, 2, 5).reshape(b, c, grid * th, grid * tw)
    if (th * grid, tw * grid) == (h, w):
        return shuffled
    out = images.clone()
    out[..., : th * grid, : tw * grid] = shuffled
    return out


class JigsawHead(LossHead):
    """Predict which of ``num_permutations`` tile orders shuffled each image, with a linear classifier of its own.

    Images come from every ``(stream, view)`` in ``sources`` (labels are not used, so labeled images count too); each
    image gets one random permutation per step. The permutation set is a buffer, so checkpoints carry it.
    """

    def __init__(
        self,
        grid: int = 2,
        num_permutations: int | None = None,
        seed: int = 0,
        sources: Sequence[Sequence[str]] = (("labeled", "weak"), ("unlabeled", "weak")),
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if grid < 2:
            raise ValueError(f"grid must be at least 2, got {grid}")
        self.grid = grid
        self.sources = [tuple(s) for s in sources]
        self.register_buffer("permutations", jigsaw_permutations(grid, num_permutations, seed))
        self.classifier: nn.Module | None = None

    @property
    def num_permutations(self) -> int:
        return len(self.permutations)

    def build(self, in_features: int, num_classes: int) -> None:
        self.classifier = nn.Linear(in_features, self.num_permutations)

    def forward(self, ctx: StepContext) -> Tensor:
        images = torch.cat([ctx.images(s, v) for s, v in self.sources if s in ctx.batch])
        labels = torch.randint(0, self.num_permutations, (len(images),), device=images.device)
        shuffled = shuffle_tiles(images, self.permutations[labels], self.grid)
        logits = self.classifier(ctx.backbone(shuffled))
        ctx.log("acc", (logits.argmax(1) == labels).float().mean())
        return F.cross_entropy(logits, labels)
