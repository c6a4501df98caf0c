"""One signal mechanism for every run, local or on SLURM: a signal stops training at the end of the current step,
with ``checkpoints/last.ckpt`` saved and ``status.json`` saying why, and the run continues later in its own dir.

=================  ==========================================================  ===========  ===============
signal             sent by                                                     state        then
=================  ==========================================================  ===========  ===============
USR2 (submitit's)  SLURM, ``signal_delay_s`` before the time limit, or as an   requeued     submitit requeues
                   early preemption warning                                                 the job (once)
SIGTERM on SLURM   ``scontrol requeue``, preemption (``PreemptMode=REQUEUE``)  requeued     SLURM restarts it
SIGTERM on SLURM   ``scancel``, a time limit without the early signal          cancelled    ``run.resume``
SIGTERM locally    ``kill``, a process manager                                 cancelled    exit 143
SIGINT             Ctrl-C (a second Ctrl-C stops at once, without checkpoint)  interrupted  exit 130
=================  ==========================================================  ===========  ===============

The handlers are installed for the whole run (the runtime's guard: from before the data is built until
:func:`sesemi.training.train` returned) and only note the signal. Before each training step (so the step before it
ended whole: its logged point written, a validation it was due for run) the ranks of a DDP run agree on what was
received (a max over ranks, so that all save the same checkpoint and stop at the same step),
every rank takes part in saving ``last.ckpt`` (rank 0 writes), rank 0 records the state and the signal in
``status.json``, and the run ends with :class:`~sesemi.runtime.RunStopped` (``SystemExit``). On SLURM a SIGTERM is
either ``scancel`` or a requeue: SLURM has already raised the job's restart count when it sends SIGTERM for a
requeue (and not for ``scancel``; seen with ``scontrol show job`` in the KillWait window on the test cluster), which
tells the two apart.

Signals belong to the training process. SLURM and a terminal's Ctrl-C signal every process of the job or process
group, DataLoader workers included: a handler inherited by a forked child does nothing there (it checks the pid),
and the data module's ``worker_init_fn`` (:mod:`sesemi.data.workers`) makes its workers ignore these signals for
good. Lightning's own SIGTERM handling (it broadcasts from inside the handler) and its USR1 auto-requeue are
replaced during the run (``SLURMEnvironment(auto_requeue=False)``).

A requeued SLURM job runs the same pickled sweep job again, hence in the same run dir; :func:`restart_checkpoint`
finds the checkpoint there, and training continues from it (same TensorBoard run, ``status.json`` attempts + 1).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, NoReturn, Self

import torch
from pytorch_lightning.callbacks import Callback
from torch.distributed import ReduceOp

from sesemi.cluster.job import submitit_signal
from sesemi.compat.lightning import saved_as_lightning_saves
from sesemi.rundir import RunRecord, last_checkpoint, read_status, slurm_job_id
from sesemi.runtime import RunStopped, note_signal

log = logging.getLogger("sesemi")


def _priority(slurm: bool) -> dict[signal.Signals, int]:
    """How the signals rank when ranks saw different ones: submitit's (it requeues) over SIGTERM over SIGINT."""
    ranks = {signal.SIGINT: 1, signal.SIGTERM: 2}
    if slurm:
        ranks[submitit_signal()] = 3
    return ranks


def restart_checkpoint(run_dir: str | os.PathLike) -> str | None:
    """The checkpoint a restarted (requeued) SLURM job continues from, or None for a first start.

    A restart is this SLURM job id already listed in the run dir's ``status.json`` attempts; every rank reaches the
    same answer, since ``last.ckpt`` cannot exist before all ranks joined the first attempt's training.
    """
    job_id = slurm_job_id()
    if not job_id or os.environ.get("SUBMITIT_EXECUTOR") != "slurm":
        return None
    status = read_status(run_dir)  # written atomically: never half a file
    if status is None or not any(str(a.get("slurm_job_id")) == job_id for a in status.get("attempts", [])):
        return None
    ckpt = last_checkpoint(run_dir)
    return str(ckpt) if ckpt.is_file() else None


def slurm_is_requeuing() -> bool:
    """True when SLURM is requeuing this job (its restart count is above this attempt's), False for a cancel."""
    job_id = slurm_job_id()
    if not job_id:
        return False
    try:
        out = subprocess.run(
            ["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True, timeout=5, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    match = re.search(r"\bRestarts=(\d+)", out)
    return match is not None and int(match.group(1)) > int(os.environ.get("SLURM_RESTART_COUNT") or 0)


def _drop_stale_submitit_tmp() -> None:
    """A crashed attempt may leave submitit's ``<job>_submitted.pkl.save_tmp``; submitit then refuses to pickle
    the job again (``A temporary saved file already exists``) and the requeue would fail."""
    import submitit

    pickle = submitit.JobEnvironment().paths.submitted_pickle
    Path(f"{pickle}.save_tmp").unlink(missing_ok=True)


class StopOnSignal(Callback):
    """Turns SIGINT, SIGTERM and (on SLURM) submitit's signal into: checkpoint at the end of the step, record, stop.

    ``slurm``: the run is a submitit SLURM job (submitit's signal requeues it, SIGTERM may be a requeue).
    """

    def __init__(self, run_dir: str, slurm: bool = False) -> None:
        self.run_dir = run_dir
        self.slurm = slurm
        self.received: signal.Signals | None = None
        self._previous: dict[signal.Signals, Any] = {}
        self._pid: int | None = None
        self._stopping = False
        self._validated_at: int | None = None  # the step of the last validation (its save is Lightning's way)
        self._started_at: int | None = None  # the step this attempt's training started at (0, or its checkpoint's)

    # -- signals -------------------------------------------------------------------------------------------
    def _note(self, signum: int, frame: Any) -> None:
        if os.getpid() != self._pid:
            return  # a child that inherited the handler (a forked DataLoader worker): the signal is not its own
        sig = signal.Signals(signum)
        note_signal(sig)  # for what runs on after the run in this process (a sweep worker)
        if self._stopping:
            return  # checkpointed already; e.g. the SIGTERM of SLURM ending a job that was just requeued
        if sig == signal.SIGINT and self.received == signal.SIGINT:
            self._stop_now()  # Ctrl-C twice
        ranks = _priority(self.slurm)
        if self.received is None or ranks[sig] > ranks[self.received]:
            self.received = sig
        log.warning("sesemi: got %s; checkpointing at the end of this step", sig.name)

    def _stop_now(self) -> NoReturn:
        """Ctrl-C twice: the run ends at once, without a checkpoint, ``interrupted`` (exit status 130).

        Raising KeyboardInterrupt from here landed wherever the process was (inside a DataLoader, a checkpoint save,
        or Lightning's own KeyboardInterrupt path, which exits with status 1), and the run ended ``failed``
        ("SystemExit: 1", a torch error). Instead the record says ``interrupted`` (when this process is the attempt
        it names: a resume not accepted yet leaves the run as it was) and the process ends here. The checkpoint
        the run continues from is the last one saved; TensorBoard hides what was logged after it (see
        :func:`sesemi.builders.build_loggers`), and the kernel releases the run dir's lock.
        """
        reason = "SIGINT twice (Ctrl-C twice): stopped at once, without a checkpoint of this step"
        status = read_status(self.run_dir) or {}
        attempt = (status.get("attempts") or [{}])[-1]
        if status.get("state") == "running" and attempt.get("pid") == os.getpid():
            with contextlib.suppress(Exception):  # e.g. a full disk: the reader tells a gone process from a live one
                RunRecord(self.run_dir).stopped("interrupted", signal.SIGINT.name, reason)
            log.warning("sesemi: interrupted: %s; resume: run.resume=%s", reason, self.run_dir)
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(128 + signal.SIGINT)

    def _install(self) -> None:
        """Own the signals (again: Lightning registers its SIGTERM handler after ``setup``)."""
        if threading.current_thread() is not threading.main_thread():
            return
        self._pid = os.getpid()
        for sig in _priority(self.slurm):
            current = signal.getsignal(sig)
            if current != self._note:
                self._previous.setdefault(sig, current)  # the first one: from before training (e.g. submitit's)
                signal.signal(sig, self._note)

    def _restore(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig, handler in self._previous.items():
            if handler is not None:
                signal.signal(sig, handler)
        self._previous = {}

    def __enter__(self) -> Self:
        """Own the signals for the whole run, from before its data is built until it returned: a signal that comes
        before training (a slow start) stops the run before its first step (nothing saved: the state is the one
        it started from), one that comes after the last step (final test) is noted and the run completes; none
        reaches submitit's own handler, which would end the process wherever it is."""
        self._install()
        return self

    def __exit__(self, *exc: object) -> None:
        self._restore()

    # Lightning registers its own SIGTERM handler when fit/validate/test start (and restores ours afterwards).
    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        self._install()

    def on_sanity_check_start(self, trainer: Any, pl_module: Any) -> None:
        self._install()

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        self._install()
        self._started_at = trainer.global_step

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        if not trainer.sanity_checking:
            self._validated_at = trainer.global_step

    # -- the decision, taken by all ranks together -----------------------------------------------------------
    def _agreed_signal(self, trainer: Any) -> signal.Signals | None:
        ranks = _priority(self.slurm)
        code = ranks.get(self.received, 0) if self.received is not None else 0
        if trainer.world_size > 1:
            tensor = torch.tensor([code], device=trainer.strategy.root_device)
            code = int(trainer.strategy.reduce(tensor, reduce_op=ReduceOp.MAX).item())
        return {v: k for k, v in ranks.items()}.get(code)

    def _outcome(self, sig: signal.Signals, ask_slurm: bool) -> tuple[str, int, str]:
        """(state, exit status, why) of a run stopped by ``sig`` (``ask_slurm``: rank 0 asks SLURM which it is)."""
        if sig == signal.SIGINT:
            return "interrupted", 128 + sig, "Ctrl-C"
        if self.slurm and sig != signal.SIGTERM:
            return "requeued", -1, "time limit or preemption warning; submitit requeues the job"
        if self.slurm and ask_slurm and slurm_is_requeuing():
            return "requeued", -1, "scontrol requeue or preemption; SLURM restarts the job"
        if self.slurm:
            return "cancelled", 128 + sig, "scancel, or the time limit without the early signal"
        return "cancelled", 128 + sig, "terminated"

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        """Stop before the next step: the step before it has ended whole (its logged point written, the validation
        it was due for run), so the run continues at the next step with no point missing or repeated."""
        agreed = self._agreed_signal(trainer)
        if agreed is None:
            return
        self._stopping = True
        ckpt = last_checkpoint(self.run_dir)
        if trainer.global_step != self._started_at:
            validated = self._validated_at == trainer.global_step
            with saved_as_lightning_saves(trainer, validated):  # a restart continues with the next step, as logged
                trainer.save_checkpoint(ckpt)  # every rank takes part; rank 0 writes
            saved = f"checkpoint {ckpt}"
        else:
            # No step trained in this attempt (the signal came before its first one): the state is the checkpoint
            # it started from, or the beginning. Not saved again: Lightning restores a save made before the first
            # step of an epoch as one made mid-step, and logged every point after it one step late.
            saved = f"no step trained in this attempt; checkpoint {ckpt}" if ckpt.is_file() else "nothing trained yet"
        state, code, why = self._outcome(agreed, ask_slurm=trainer.is_global_zero)
        reason = f"{agreed.name} at step {trainer.global_step} ({why}); {saved}"
        record = RunRecord(self.run_dir)
        if state == "requeued":
            record.requeued(reason, agreed.name)
        else:
            record.stopped(state, agreed.name, reason)
        if state == "requeued" and agreed == submitit_signal() and self.slurm:
            for logger in trainer.loggers:  # before the requeue ends the job (W&B's service with it), as Lightning does
                logger.finalize("finished")
            handler = self._previous.get(agreed)
            if callable(handler):
                if trainer.is_global_zero:
                    _drop_stale_submitit_tmp()
                # Rank 0: submitit pickles the job again, runs `scontrol requeue` and exits (SystemExit); other
                # ranks return at once. An error here (e.g. timed out too many times) fails the run.
                try:
                    with contextlib.suppress(SystemExit):
                        handler(int(agreed), None)
                except subprocess.CalledProcessError as err:
                    # SLURM ends the job step as soon as it accepted the requeue, and its SIGTERM may reach
                    # `scontrol requeue` itself before it returned (seen on the test cluster): requeued all the same.
                    if err.returncode != -signal.SIGTERM:
                        raise
        if trainer.is_global_zero:
            if not ckpt.is_file():
                resume = "the requeued job starts over" if state == "requeued" else "run the command again"
            elif state == "requeued":
                resume = "the requeued job resumes from it"
            else:
                resume = f"resume: run.resume={self.run_dir}"
            log.warning("sesemi: %s: %s; %s", state, reason, resume)
        raise RunStopped(reason, code, state)
