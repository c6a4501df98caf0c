"""Loader workers and the job's signals: SLURM signals every process of a job, loader workers included, at any
moment, also while the loaders start their workers (a run's first step, its first validation)."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time

import pytest
from torchvision.transforms import v2

from sesemi.data import SemiSupervisedDataModule, pipeline
from sesemi.datasets import Digits


def _children(pid: int) -> list[int]:
    kids = []
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/children") as f:
                kids += [int(k) for k in f.read().split()]
        except OSError:
            continue  # the thread ended
    return kids


@pytest.fixture
def sigterm_storm():
    """SIGTERM to this process and each of its children every half millisecond, as ``scancel`` sends it to every
    process of the job, but over and over, so that some land while workers start."""
    me, stop, noted = os.getpid(), threading.Event(), []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: noted.append(signum))  # the run's note-only handler

    def storm() -> None:
        while not stop.is_set():
            for pid in [me, *_children(me)]:
                with contextlib.suppress(ProcessLookupError):  # a worker that just ended
                    os.kill(pid, signal.SIGTERM)
            time.sleep(0.0005)

    thread = threading.Thread(target=storm, daemon=True)
    thread.start()
    yield noted
    stop.set()
    thread.join()
    signal.signal(signal.SIGTERM, previous)


def test_loader_workers_survive_sigterm_from_the_moment_they_start(sigterm_storm):
    """PyTorch's worker installs a SIGTERM handler that ends it, some setup before the ``worker_init_fn`` ignores the
    signal: without the data module's signal-safe start, the first of these loaders already failed with "DataLoader
    worker exited unexpectedly"."""
    eval_view = pipeline([], mean=[0.5], std=[0.5])
    module = SemiSupervisedDataModule(
        Digits(split="train"),
        labeled_views={"weak": pipeline([v2.RandomHorizontalFlip()], [0.5], [0.5])},
        eval_transform=eval_view,
        labels_per_class=10,
        val_per_class=10,
        eval_batch_size=100,
        num_workers=2,
        persistent_workers=False,  # new workers at every pass
    )
    module.setup("fit")
    for _ in range(40):
        assert sum(len(batch["target"]) for batch in module.val_dataloader()) == 100
    assert len(sigterm_storm) > 40  # the storm reached this process all along, between the workers' starts too
