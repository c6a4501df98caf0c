"""What the environment decided for one run, handed to :func:`sesemi.training.train` by whoever started it.

Core (train, builders, module, data...) knows nothing of SLURM, submitit or how DDP processes are started: the
entry point asks :mod:`sesemi.cluster.environment` for a :class:`Runtime` and passes it in. A Python caller that
passes none gets a plain local run (Lightning's own choices, no signal handling).
"""

from __future__ import annotations

import contextlib
import signal
from dataclasses import dataclass, field
from typing import Any

# Set in the DDP rank processes that sesemi.cluster.ranks starts for a multi-device job of an in-process sweep: they
# enter through the training app like any job, and leave reporting (console lines, the sweep) to the job process.
RANK_PROCESS_ENV = "SESEMI_RANK_PROCESS"

_RECEIVED: set[signal.Signals] = set()


def note_signal(sig: signal.Signals) -> None:
    """Record that this process received ``sig`` (whichever handler took it)."""
    _RECEIVED.add(signal.Signals(sig))


def signal_received(sig: signal.Signals) -> bool:
    """True once this process received ``sig``: a sweep worker, which runs trial after trial in one process, takes
    no new trial after SIGTERM, even when a run's own handler (not the worker's) took the signal."""
    return signal.Signals(sig) in _RECEIVED


@dataclass
class Runtime:
    strategy: Any = "auto"  # the Trainer's ``strategy`` (a name or a configured Strategy)
    plugins: list[Any] = field(default_factory=list)  # extra Trainer plugins (e.g. a cluster environment)
    # Lightning callbacks the environment adds: the signal handling of sesemi.cluster.signals, a sweep's trial
    # callback (report, prune) handed over by the sweep's task.
    callbacks: list[Any] = field(default_factory=list)
    restart_checkpoint: str | None = None  # a requeued job continues from this checkpoint of its own run dir
    # The context the whole run executes in, from before its data is built until it returned (e.g. the cluster
    # layer owning the process's signals for that time).
    guard: contextlib.AbstractContextManager[Any] = field(default_factory=contextlib.nullcontext)


class RunStopped(SystemExit):
    """Ends a run that a signal stopped after its checkpoint was saved and its status recorded (not a failure).

    ``code`` is the process's exit status (128 + signal number for a local stop, as a shell reports it); ``state``
    what the run's record says: ``requeued`` (the scheduler restarts the job, which continues the run by itself),
    ``cancelled`` or ``interrupted`` (someone has to continue it).
    """

    def __init__(self, reason: str, code: int, state: str = "cancelled") -> None:
        super().__init__(code)
        self.reason = reason
        self.state = state

    def __str__(self) -> str:
        return self.reason
