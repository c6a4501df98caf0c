"""What a run costs, logged at every validation of training so that a cost can be ``run.objective`` or one of a
sweep's objectives, beside ``val/acc``: it is in ``trainer.callback_metrics``, TensorBoard and ``metrics.json``.

- ``cost/step_time_s``: mean wall time per optimizer step since the last validation, validation excluded. A span
  runs from the start of the first step after a validation (or after training started) to the next validation,
  so it holds the steps' data fetches, forward, backward and hooks, but neither the loader start-up before the
  first step nor validation and checkpoint writes.
- ``cost/params``: parameters the optimizer trains (``requires_grad``: the network and the loss heads' own layers;
  the EMA copy is not trained).
- ``cost/peak_mem_mb``: peak memory since this fit started: on a GPU the CUDA allocator's maximum allocated, else
  the process's peak resident set (Linux: reset at fit start, so that trials run one after another in one process
  each measure their own; elsewhere ``getrusage``'s peak of the whole process). Data loader workers are other
  processes and are not counted.

Every hook is O(1) and none syncs the device; with several processes the step time is averaged and the peak memory
is the largest over ranks.
"""

from __future__ import annotations

import resource
import sys
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

_PROC = Path("/proc/self")


def reset_peak_rss() -> bool:
    """Reset this process's peak resident set to its current size (Linux's ``clear_refs``: 5); False where that
    is not available, and the peak stays the whole process's."""
    try:
        (_PROC / "clear_refs").write_text("5")
    except OSError:
        return False
    return True


def peak_rss_mb() -> float:
    """The process's peak resident set in MiB: since the last :func:`reset_peak_rss` on Linux (``VmHWM``)."""
    try:
        for line in (_PROC / "status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux, bytes on macOS
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def trainable_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


class CostMetrics(pl.Callback):
    """Logs ``cost/step_time_s``, ``cost/params`` and ``cost/peak_mem_mb`` at every validation during fit."""

    def __init__(self) -> None:
        self._span_start: float | None = None  # when the current span of training steps started; None: paused
        self._span_step = 0  # the global step at that moment
        self._seconds = 0.0  # training time since the last validation, validation excluded
        self._steps = 0

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(pl_module.device)
        else:
            reset_peak_rss()

    def on_train_batch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        if self._span_start is None:
            self._span_start, self._span_step = time.perf_counter(), trainer.global_step

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._span_start is not None and not trainer.sanity_checking:
            self._seconds += time.perf_counter() - self._span_start
            self._steps += trainer.global_step - self._span_step
            self._span_start = None  # the next span starts with the next step

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        if self._steps > 0:
            pl_module.log("cost/step_time_s", self._seconds / self._steps, sync_dist=True)
            self._seconds, self._steps = 0.0, 0
        # The same on every rank; synced all the same, or Lightning warns at every validation of a DDP run.
        pl_module.log("cost/params", float(trainable_parameters(pl_module)), sync_dist=True, reduce_fx="max")
        device = pl_module.device
        peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else peak_rss_mb()
        pl_module.log("cost/peak_mem_mb", peak, sync_dist=True, reduce_fx="max")
