"""Learning-rate schedules torch does not ship: FixMatch's decay, and decays over a run's budget of steps or time."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from datetime import timedelta
from functools import partial
from typing import Any

import torch
import torch.distributed as dist
from pytorch_lightning.callbacks import Timer
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


def budget_seconds(max_time: str | Mapping[str, float] | timedelta | None) -> float | None:
    """``trainer.max_time`` in seconds (None: no time limit), read by Lightning's own ``Timer``: the callback that
    stops the run at it, so the schedule and the stop agree on what the budget is."""
    if max_time is None:
        return None
    timer = Timer(duration=dict(max_time) if isinstance(max_time, Mapping) else max_time)
    return float(timer.time_remaining())  # the whole budget: the timer has not started


def cosine_curve(progress: float) -> float:
    """``lr_scheduler=cosine``'s shape: 1 at the start, 0 at the end."""
    return (1 + math.cos(math.pi * progress)) / 2


def fixmatch_curve(progress: float, cycles: float = 7 / 16) -> float:
    """:class:`FixMatchCosine`'s shape: ``cos(cycles * pi * progress)``, about 0.2 at the end."""
    return math.cos(cycles * math.pi * progress)


class BudgetSchedule(LRScheduler):
    """A decay that ends when the run ends, whichever limit ends it: ``trainer.max_steps`` or ``trainer.max_time``.

    Progress is ``max(step / total_steps, training seconds / max_time)``, capped at 1, and the learning rate is
    ``lr * curve(progress)``. With a time budget, trials of different speed (a wider network, a larger batch) all
    reach the end of their schedule when the budget is spent, so a sweep compares them at equal cost, as the recipe
    benchmark does; a run whose steps run out first ends its schedule at its last step, as the step schedules do.

    Training seconds are counted by this schedule from when it is built (the optimizer's setup, a moment before
    Lightning's timer for ``max_time`` starts: the schedule ends at or just before the budget, never after) and are
    kept in its state, so the checkpoint holds them: a resumed or requeued run continues from the time it had
    spent, as Lightning's timer does, and the time between two attempts is not counted. ``clock`` is the time
    source (seconds, monotonic). With several processes (DDP) each step takes rank 0's time, so that every rank
    sets the same learning rate: one broadcast of a float per step, only when there is a time budget.

    Chainable, like :class:`FixMatchCosine`: a resumed run whose ``total_steps`` grew (see
    :class:`sesemi.resume.ScheduleLength`) continues from the learning rate it had reached.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        curve: Callable[[float], float],
        total_steps: int,
        max_time: str | Mapping[str, float] | timedelta | None = None,
        clock: Callable[[], float] = time.monotonic,
        last_epoch: int = -1,
    ) -> None:
        self.curve = curve
        self.total_steps = total_steps
        self.budget_s = budget_seconds(max_time)
        if total_steps <= 0 and self.budget_s is None:
            raise ValueError("a budget schedule needs trainer.max_steps > 0 or trainer.max_time: neither is set")
        self.clock = clock
        self.spent_s = 0.0  # training seconds of the earlier attempts (restored from the checkpoint)
        self._attempt_start = clock()
        self._last_seconds = 0.0  # training seconds at the previous step
        super().__init__(optimizer, last_epoch)

    def training_seconds(self) -> float:
        """Seconds of training so far, all attempts together."""
        return self.spent_s + self.clock() - self._attempt_start

    def _progress(self, seconds: float, step: int) -> float:
        by_steps = step / self.total_steps if self.total_steps > 0 else 0.0
        by_time = seconds / self.budget_s if self.budget_s else 0.0
        return min(max(by_steps, by_time), 1.0)

    def _rank_zero(self, seconds: float) -> float:
        if not dist.is_available() or not dist.is_initialized() or dist.get_world_size() == 1:
            return seconds
        device = self.optimizer.param_groups[0]["params"][0].device  # the device the process group communicates on
        value = torch.tensor([seconds], dtype=torch.float64, device=device)
        dist.broadcast(value, src=0)
        return float(value.item())

    def get_lr(self) -> list[float]:
        if self.last_epoch == 0:
            return list(self.base_lrs)
        seconds = self._rank_zero(self.training_seconds()) if self.budget_s else 0.0
        before = self.curve(self._progress(self._last_seconds, self.last_epoch - 1))
        now = self.curve(self._progress(seconds, self.last_epoch))
        self._last_seconds = seconds
        ratio = now / before if before > 0 else 1.0  # a curve already at 0 stays there
        return [group["lr"] * ratio for group in self.optimizer.param_groups]

    def state_dict(self) -> dict[str, Any]:
        """Plain values only (a checkpoint is read with ``weights_only``): no curve or clock, and the training
        seconds up to now."""
        state = {k: v for k, v in super().state_dict().items() if k not in ("curve", "clock", "_attempt_start")}
        state["spent_s"] = self.training_seconds()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self._attempt_start = self.clock()  # this attempt counts from here, on top of the restored spent_s


def cosine_time(
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    max_time: str | Mapping[str, float] | None,
    clock: Callable[[], float] = time.monotonic,
) -> BudgetSchedule:
    """``lr_scheduler=cosine_time``: cosine decay to 0 over the run's budget (:class:`BudgetSchedule`)."""
    return BudgetSchedule(optimizer, cosine_curve, total_steps, max_time, clock)


def fixmatch_cosine_time(
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    max_time: str | Mapping[str, float] | None,
    cycles: float = 7 / 16,
    clock: Callable[[], float] = time.monotonic,
) -> BudgetSchedule:
    """``lr_scheduler=fixmatch_cosine_time``: FixMatch's decay over the run's budget (:class:`BudgetSchedule`)."""
    return BudgetSchedule(optimizer, partial(fixmatch_curve, cycles=cycles), total_steps, max_time, clock)
