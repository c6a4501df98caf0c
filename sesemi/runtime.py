"""What the environment decided for one run, handed to :func:`sesemi.train.train` by whoever started it.

Core (train, builders, module, data...) knows nothing of SLURM, submitit or how DDP processes are started: the
entry point asks :mod:`sesemi.cluster.environment` for a :class:`Runtime` and passes it in. A Python caller that
passes none gets a plain local run (Lightning's own choices, no signal handling).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Runtime:
    strategy: Any = "auto"  # the Trainer's ``strategy`` (a name or a configured Strategy)
    plugins: list[Any] = field(default_factory=list)  # extra Trainer plugins (e.g. a cluster environment)
    callbacks: list[Any] = field(default_factory=list)  # e.g. the signal handling of sesemi.cluster.signals
    restart_checkpoint: str | None = None  # a requeued job continues from this checkpoint of its own run dir
    # The context the whole run executes in, from before its data is built until it returned (e.g. the cluster
    # layer owning the process's signals for that time).
    guard: contextlib.AbstractContextManager[Any] = field(default_factory=contextlib.nullcontext)


class RunStopped(SystemExit):
    """Ends a run that a signal stopped after its checkpoint was saved and its status recorded (not a failure).

    ``code`` is the process's exit status (128 + signal number for a local stop, as a shell reports it).
    """

    def __init__(self, reason: str, code: int) -> None:
        super().__init__(code)
        self.reason = reason

    def __str__(self) -> str:
        return self.reason
