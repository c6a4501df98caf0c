"""Learning-rate schedules from the semi-supervised literature that torch does not ship."""

from __future__ import annotations

import math

import torch
from torch.optim.lr_scheduler import LambdaLR


def fixmatch_cosine(optimizer: torch.optim.Optimizer, total_steps: int, cycles: float = 7 / 16) -> LambdaLR:
    """FixMatch's decay, ``lr * cos(cycles * pi * k / K)`` (Sohn et al. 2020: 7/16, ending near 0.2 * lr)."""
    return LambdaLR(optimizer, lambda step: math.cos(cycles * math.pi * min(step, total_steps) / total_steps))
