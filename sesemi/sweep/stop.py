"""A worker that got SIGTERM (``scancel``, preemption, a time limit) takes no new trial; its trial continues from its
checkpoint, by the requeued job itself or by another worker (:mod:`sesemi.sweep.continuation`).

SLURM sends SIGTERM to every process of the job and SIGKILL ``KillWait`` seconds later. submitit's own handler only
logs SIGTERM, and while a trial trains, Lightning and sesemi's preemption callback replace the handler with theirs
(checkpoint, stop at the end of the step). Whoever handles the signal, the worker must know it got one: the
handler installed here notes it and calls the one it replaced, and :func:`watch` wraps whichever handler is
current again (the sweep's trial callback calls it at every step, after the others installed theirs). Before a
trial's first step the run's own handler may take the signal unwrapped (it owns the signals from before its data is
built); every handler records the signal in :mod:`sesemi.runtime` (:func:`~sesemi.runtime.note_signal`), which
:func:`received` asks.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
from typing import Any

from sesemi.cluster.job import submitit_signal
from sesemi.runtime import note_signal, signal_received

log = logging.getLogger("sesemi.sweep")


def received() -> bool:
    """True once this process got SIGTERM."""
    return signal_received(signal.SIGTERM)


def time_is_up() -> bool:
    """True once this SLURM job got submitit's signal (a time limit's early signal, a preemption warning). A trial
    that trains stops for it and submitit requeues the job; one that came after a trial's last step (the trial
    completed) is only noted, and the worker must not start another trial in the seconds its slot has left."""
    return os.environ.get("SUBMITIT_EXECUTOR") == "slurm" and signal_received(submitit_signal())


def requeue_job() -> None:
    """Hand submitit's signal to submitit's handler again: it requeues this job (the same worker, which continues
    where the study is) and exits (``SystemExit``). Returns only where no such handler is installed."""
    sig = submitit_signal()
    handler = signal.getsignal(sig)
    if not callable(handler):
        return
    try:
        handler(int(sig), None)
    except subprocess.CalledProcessError as err:
        # SLURM ends the job step once it accepted the requeue; its SIGTERM may reach `scontrol requeue` first.
        if err.returncode != -signal.SIGTERM:
            raise
    raise SystemExit(-1)


class _Noting:
    """A SIGTERM handler that notes the signal, then runs the handler it wraps."""

    def __init__(self, previous: Any) -> None:
        self.previous = previous

    def __call__(self, signum: int, frame: Any) -> None:
        if not received():
            log.warning("sesemi: SIGTERM: this worker takes no new trial; its trial continues from its checkpoint")
        note_signal(signal.SIGTERM)
        if callable(self.previous):
            self.previous(signum, frame)
        elif self.previous == signal.SIG_DFL:
            raise SystemExit(128 + signum)


def watch() -> None:
    """Make sure the current SIGTERM handler notes the signal (idempotent; the main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        return
    current = signal.getsignal(signal.SIGTERM)
    if not isinstance(current, _Noting) and current != signal.SIG_IGN:
        signal.signal(signal.SIGTERM, _Noting(current))
