"""The process every submitit job of sesemi's launchers runs: submitit's own job runner, with submitit's signal held
from the process's first instant.

submitit starts a job as ``python -u -m submitit.core._submit FOLDER``, which installs its preemption/time-limit
handler (USR2) only after unpickling the job, and unpickling imports Hydra, torch, Lightning and sesemi: seconds on a
quiet node, a minute on a busy one or from a network file system. A time limit's early signal or a preemption
warning in that window found the default action: every task died of it and the job ended FAILED, never requeued.
sesemi's launchers run ``python -u -m sesemi.cluster.job -u -m submitit.core._submit FOLDER`` instead (submitit's
``python`` parameter, see :func:`sesemi.compat.submitit.start_jobs_with`): the signal is noted here, and the job's
first step (:func:`hand_over`, once submitit's handler is installed) sends it again, so that submitit requeues the
job as it does for a signal that comes a moment later.

Keep this module's imports to the standard library: it runs before anything else is imported.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from typing import Any

_EARLY: list[signal.Signals] = []


def submitit_signal() -> signal.Signals:
    """The signal submitit uses for preemption and time limits (``USR2`` unless SUBMITIT_PREEMPT_SIGNAL says)."""
    name = os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2")
    return getattr(signal, f"SIG{name}", signal.SIGUSR2)


def _note(signum: int, frame: Any) -> None:
    if signum not in _EARLY:
        _EARLY.append(signal.Signals(signum))


def hand_over() -> None:
    """Send this process the signal that came while it started, if one did (submitit's handler takes it now)."""
    while _EARLY:
        sig = _EARLY.pop(0)
        logging.getLogger("sesemi").warning(
            "sesemi: %s came while the job was starting; handing it to submitit (it requeues the job)", sig.name
        )
        os.kill(os.getpid(), sig)


def main(argv: list[str]) -> None:
    """``argv``: what submitit appends to its ``python`` command, ``-u -m submitit.core._submit FOLDER``."""
    signal.signal(submitit_signal(), _note)
    from sesemi.compat.submitit import process_job

    process_job(argv[-1])


if __name__ == "__main__":
    # Run as __main__, this file is not the module ``sesemi.cluster.job`` the launcher imports: use that one's state.
    from sesemi.cluster.job import main as _main

    _main(sys.argv)
