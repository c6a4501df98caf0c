"""Preemption and time limits of SLURM jobs started by submitit (``hydra/launcher=slurm``): one owner, submitit.

Signals a job can get while it trains:

- ``USR2`` (submitit's signal, ``hydra.launcher.signal_delay_s`` before the time limit, or an early preemption
  warning): submitit's own handler would requeue the job at once, in the middle of a step. sesemi's handler only
  notes the signal; at the end of the current training step all ranks agree on it, save
  ``<run dir>/checkpoints/last.ckpt``, mark ``status.json`` ``requeued``, and rank 0 then runs submitit's handler,
  which requeues the job (``scontrol requeue``) and ends it.
- ``SIGTERM`` (``scontrol requeue``, preemption with ``PreemptMode=REQUEUE``, ``scancel``, a time limit without
  the early signal): SLURM itself requeues (or cancels) the job and kills it ``KillWait`` seconds later; the job
  saves the same checkpoint and marks the run ``requeued`` in that window.

Lightning's own SLURM requeue (``USR1``) is off (``SLURMEnvironment(auto_requeue=False)``), and its SIGTERM
handling (a broadcast from inside the signal handler) is replaced while training, so the two do not fight.

The requeued job starts again with the same pickled sweep job, hence the same run dir; :func:`restart_checkpoint`
finds the checkpoint there and training continues from it (same TensorBoard run, ``status.json`` attempts + 1).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from pathlib import Path
from typing import Any

import torch
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.utilities import rank_zero_only
from torch.distributed import ReduceOp

from sesemi.resolvers import STATUS_FILE
from sesemi.rundir import RunRecord, read_status

log = logging.getLogger("sesemi")


class Requeued(SystemExit):
    """Ends a job that was preempted or ran out of time after its checkpoint was saved (not a failure)."""

    def __init__(self, reason: str) -> None:
        super().__init__(-1)
        self.reason = reason

    def __str__(self) -> str:
        return self.reason


def submitit_signal() -> signal.Signals:
    """The signal submitit uses for preemption and time limits (``USR2`` unless SUBMITIT_PREEMPT_SIGNAL says)."""
    name = os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2")
    return getattr(signal, f"SIG{name}", signal.SIGUSR2)


def _codes() -> dict[signal.Signals, int]:
    """How the signals rank when ranks saw different ones: submitit's (it requeues) over SIGTERM."""
    return {signal.SIGTERM: 1, submitit_signal(): 2}


def checkpoint_path(run_dir: str | os.PathLike) -> Path:
    return Path(run_dir) / "checkpoints" / "last.ckpt"


def restart_checkpoint(run_dir: str | os.PathLike) -> str | None:
    """The checkpoint a restarted (requeued) SLURM job continues from, or None for a first start.

    A restart is this SLURM job id already listed in the run dir's ``status.json`` attempts; every rank reaches the
    same answer, since ``last.ckpt`` cannot exist before all ranks joined the first attempt's training.
    """
    job_id = os.environ.get("SLURM_JOB_ID")
    if not job_id or os.environ.get("SUBMITIT_EXECUTOR") != "slurm":
        return None
    import json

    status_path = Path(run_dir) / STATUS_FILE
    if not status_path.is_file():
        return None
    try:
        attempts = json.loads(status_path.read_text()).get("attempts", [])
    except ValueError:  # being replaced by rank 0 right now; only a restart can have a checkpoint anyway
        attempts = [{"slurm_job_id": job_id}]
    if not any(str(a.get("slurm_job_id")) == job_id for a in attempts):
        return None
    ckpt = checkpoint_path(run_dir)
    return str(ckpt) if ckpt.is_file() else None


def note_resumed(record: Any, ckpt: str) -> None:
    """Record in this attempt of ``status.json`` which checkpoint it resumed from (rank 0 only)."""
    if rank_zero_only.rank != 0:
        return
    status = read_status(record.dir) or {}
    attempts = status.get("attempts") or [{}]
    attempts[-1]["resumed_from"] = ckpt
    record.update(attempts=attempts)
    log.info("sesemi: requeued job resumes from %s (restart %d)", ckpt, len(attempts) - 1)


class PreemptionCallback(Callback):
    """Turns SIGTERM / submitit's signal into: checkpoint, ``status: requeued``, requeue, exit."""

    def __init__(self, run_dir: str) -> None:
        self.run_dir = run_dir
        self.received: signal.Signals | None = None
        self._previous: dict[int, Any] = {}

    # -- signals -------------------------------------------------------------------------------------------
    def _note(self, signum: int, frame: Any) -> None:
        codes = _codes()
        if self.received is None or codes.get(signum, 0) > codes.get(self.received, 0):
            self.received = signal.Signals(signum)
        log.warning("sesemi: got %s; checkpointing at the end of this step", signal.Signals(signum).name)

    def _install(self) -> None:
        if threading.current_thread() is not threading.main_thread() or self._previous:
            return
        for sig in {signal.SIGTERM, submitit_signal()}:
            self._previous[sig] = signal.getsignal(sig)
            signal.signal(sig, self._note)

    def _restore(self) -> None:
        for sig, handler in self._previous.items():
            if handler is not None:
                signal.signal(sig, handler)
        self._previous = {}

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        # After Lightning registered its handlers (it restores the originals at teardown).
        self._install()

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        self._restore()

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        # After a requeue SLURM sends SIGTERM while Lightning shuts down; Lightning's own SIGTERM handler would
        # then broadcast from inside the handler (and fail, the other ranks being gone): keep ours, which only
        # notes it. Lightning's teardown restores the handlers from before training (submitit's) afterwards.
        if not isinstance(exception, Requeued):
            self._restore()

    # -- the decision, taken by all ranks together -----------------------------------------------------------
    def _agreed_signal(self, trainer: Any) -> signal.Signals | None:
        codes = _codes()
        code = codes.get(self.received, 0) if self.received is not None else 0
        if trainer.world_size > 1:
            tensor = torch.tensor([code], device=trainer.strategy.root_device)
            code = int(trainer.strategy.reduce(tensor, reduce_op=ReduceOp.MAX).item())
        return {v: k for k, v in codes.items()}.get(code)

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        agreed = self._agreed_signal(trainer)
        if agreed is None:
            return
        ckpt = checkpoint_path(self.run_dir)
        trainer.save_checkpoint(ckpt)  # every rank takes part; rank 0 writes
        step = trainer.global_step
        if agreed == signal.SIGTERM:
            reason = f"SIGTERM at step {step} (scontrol requeue, preemption or scancel); checkpoint {ckpt}"
        else:
            reason = f"{agreed.name} at step {step} (time limit or preemption warning); checkpoint {ckpt}"
        if trainer.is_global_zero:
            RunRecord(self.run_dir).requeued(reason)
        submitit_handler = self._previous.get(agreed) if agreed != signal.SIGTERM else None
        if callable(submitit_handler):
            # Rank 0: submitit pickles the job again, runs `scontrol requeue` and exits (SystemExit); other ranks
            # return at once. An error here (e.g. timed out too many times) propagates: the run is marked failed.
            with contextlib.suppress(SystemExit):
                submitit_handler(int(agreed), None)
        log.warning("sesemi: %s; the requeued job resumes from it", reason)
        raise Requeued(reason)
