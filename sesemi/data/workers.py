"""The ``worker_init_fn`` of sesemi's DataLoaders: signals belong to the training process, seeding stays Lightning's.

SLURM sends its signals (USR2 before a time limit, SIGTERM on ``scancel``/requeue) to every process of the job, and
Ctrl-C reaches the whole process group: DataLoader workers included. A worker must neither die of them (the
training process would then fail with "DataLoader worker exited unexpectedly" instead of checkpointing) nor run
the handlers it may have inherited (requeue the job itself). Workers ignore them; the training process decides
(:mod:`sesemi.cluster.signals`), and ends its workers when it ends. This holds for persistent workers, for user
datasets (the data module builds every loader), and for any process a worker forks (ignored signals are inherited).

A worker is not safe from its start, though: PyTorch's worker loop first installs a C-level SIGTERM handler that
ends the worker (``_set_worker_signal_handlers``), and only some setup later runs the ``worker_init_fn``. A SIGTERM in
between (SLURM signalling a job while its loaders start their workers, e.g. at the first step or the first
validation) killed the worker, and the run failed instead of stopping cleanly. So the loaders start their workers
with these signals blocked (:func:`loader_context`), and the ``worker_init_fn`` ignores them before unblocking them:
a signal that came meanwhile is discarded with it.

Setting a ``worker_init_fn`` turns off Lightning's own (it only adds one to loaders without), so this one runs
Lightning's seeding of workers first (``seed_everything(workers=True)``), then a user's ``worker_init_fn``.
"""

from __future__ import annotations

import atexit
import functools
import multiprocessing
import signal
from collections.abc import Callable
from multiprocessing.context import ForkContext, ForkProcess

from sesemi.compat.lightning import seed_worker

# The signals the training process acts on (sesemi.cluster.signals), USR1 (Lightning's SLURM requeue signal) and
# SIGCONT, which SLURM sends along and submitit's inherited handler would log from every worker (ignoring SIGCONT
# only drops the handler: a stopped process still continues).
TRAINING_PROCESS_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2, signal.SIGCONT)


def _init_worker(worker_id: int, user_fn: Callable[[int], None] | None) -> None:
    for sig in TRAINING_PROCESS_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)  # discards one that is pending, blocked since the fork
    signal.pthread_sigmask(signal.SIG_UNBLOCK, TRAINING_PROCESS_SIGNALS)
    seed_worker(worker_id)
    if user_fn is not None:
        user_fn(worker_id)


def worker_init_fn(user_fn: Callable[[int], None] | None = None) -> Callable[[int], None]:
    """The ``worker_init_fn`` for a DataLoader, chaining ``user_fn`` (picklable, for spawned workers too)."""
    return functools.partial(_init_worker, user_fn=user_fn)


class _SignalSafeForkProcess(ForkProcess):
    """A forked worker that starts with the training process's signals blocked (the ``worker_init_fn`` unblocks
    them once it ignores them). The parent blocks them only while it forks: a signal for it waits until then."""

    def start(self) -> None:
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, TRAINING_PROCESS_SIGNALS)
        try:
            super().start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)


class _SignalSafeForkContext(ForkContext):
    Process = _SignalSafeForkProcess


def loader_context(num_workers: int) -> multiprocessing.context.BaseContext | None:
    """The ``multiprocessing_context`` of a DataLoader with ``num_workers`` workers and :func:`worker_init_fn`.

    Workers start with signals blocked when they are forked (the default start method on Linux up to Python 3.13);
    under another start method this returns None (the DataLoader's default), and a signal in the first moments of a
    worker may still end it. None without workers, which the DataLoader requires.
    """
    if num_workers == 0 or multiprocessing.get_start_method() != "fork":
        return None
    return _SignalSafeForkContext()


@atexit.register  # registered after multiprocessing's own exit handler, so it runs before it
def _end_workers() -> None:
    """End the DataLoader workers still alive when the training process exits (e.g. after an error mid-epoch, whose
    traceback keeps the loader iterator alive): they ignore SIGTERM, so multiprocessing's exit handler (terminate,
    then join) would wait for them forever."""
    for child in multiprocessing.active_children():
        if child.daemon:
            child.kill()
