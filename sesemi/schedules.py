"""Learning-rate schedules from the semi-supervised literature that torch does not ship."""

from __future__ import annotations

import math

import torch
from torch.optim.lr_scheduler import LRScheduler


class FixMatchCosine(LRScheduler):
    """FixMatch's decay, ``lr * cos(cycles * pi * k / K)`` (Sohn et al. 2020: 7/16, ending near 0.2 * lr).

    Chainable, like torch's ``CosineAnnealingLR``: each step multiplies the current learning rate by the ratio of
    the curve at this step to the last. A resumed run whose ``total_steps`` grew (see
    :class:`sesemi.resume.ScheduleLength`) therefore continues from the learning rate it had reached, decreasing
    along the longer curve until its new last step, instead of jumping back up to the longer curve's value.
    """

    def __init__(
        self, optimizer: torch.optim.Optimizer, total_steps: int, cycles: float = 7 / 16, last_epoch: int = -1
    ) -> None:
        self.total_steps = total_steps
        self.cycles = cycles
        super().__init__(optimizer, last_epoch)

    def _curve(self, step: int) -> float:
        return math.cos(self.cycles * math.pi * min(step, self.total_steps) / self.total_steps)

    def get_lr(self) -> list[float]:
        if self.last_epoch == 0:
            return list(self.base_lrs)
        ratio = self._curve(self.last_epoch) / self._curve(self.last_epoch - 1)
        return [group["lr"] * ratio for group in self.optimizer.param_groups]


def fixmatch_cosine(optimizer: torch.optim.Optimizer, total_steps: int, cycles: float = 7 / 16) -> FixMatchCosine:
    """``lr_scheduler=fixmatch_cosine``: :class:`FixMatchCosine` over ``total_steps`` (``trainer.max_steps``)."""
    return FixMatchCosine(optimizer, total_steps, cycles)
