"""Every use of a Lightning internal in sesemi, in one place, each with why no public API does it.

``tests/compat/test_lightning.py`` checks each against the installed Lightning, so an upgrade that moves one fails
there, loudly and by name, instead of silently changing behaviour.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

from lightning_fabric.utilities.seed import pl_worker_init_function

# Lightning seeds DataLoader workers only through the worker_init_fn it adds to loaders that have none; a loader
# with its own (sesemi.data.workers) must call it itself. ``seed_everything(workers=True)`` announces it through
# this environment variable (documented in seed_everything's docstring, but not as an API).
SEED_WORKERS_ENV = "PL_SEED_WORKERS"


def seed_worker(worker_id: int) -> None:
    """Lightning's seeding of a DataLoader worker, when ``seed_everything(..., workers=True)`` asked for it.

    ``pl_worker_init_function`` is public but lives in ``lightning_fabric.utilities.seed``, which Lightning calls
    internal; its global rank defaults to ``rank_zero_only.rank``, the rank of the training process.
    """
    if int(os.environ.get(SEED_WORKERS_ENV, "0")):
        pl_worker_init_function(worker_id)


def should_update_logs(trainer: object) -> bool:
    """Whether Lightning writes this training step's logged metrics to the loggers (``log_every_n_steps``).

    There is no public property; ``trainer._logger_connector.should_update_logs`` is what the training loop reads.
    True when it is not there (e.g. the module is not attached to a trainer).
    """
    connector = getattr(trainer, "_logger_connector", None)
    return bool(getattr(connector, "should_update_logs", True))


@contextlib.contextmanager
def saved_as_lightning_saves(trainer: Any, validated: bool) -> Iterator[None]:
    """A checkpoint saved at ``on_train_batch_start`` recorded as Lightning records its own saves.

    sesemi stops a run for a signal before the next training step, once the step before it ended whole (its
    point logged, the validation it was due for run). Lightning's restart reads the loop's progress counters to tell
    where a save happened, and then corrects its logging step (``_batches_that_stepped``) for saves made before that
    step's end: with the counters of a save before the next step, every point after a restart was logged one step
    late and the stop left a hole. So the counters are saved as Lightning's own save would have left them: after a
    step that validated, as a save at the end of that validation; after any other step, as a save at the end of that
    training batch; before the first step, as nothing begun. No public API sets the loop's progress.
    """
    loop = trainer.fit_loop.epoch_loop
    progress = loop.batch_progress
    changed: list[tuple[Any, str]] = []
    if progress.total.ready > progress.total.completed:  # the next batch was fetched already
        changed += [(progress.total, "ready"), (progress.current, "ready")]
    if progress.total.completed > 0:
        changed += [(loop, "_batches_that_stepped")]
        if not validated:
            changed += [(progress.total, "completed"), (progress.current, "completed")]
    for obj, name in changed:
        setattr(obj, name, getattr(obj, name) - 1)
    try:
        yield
    finally:
        for obj, name in changed:
            setattr(obj, name, getattr(obj, name) + 1)
