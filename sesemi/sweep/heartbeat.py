"""A trial's heartbeat: while a process has a trial in hand (running it, or waiting for the job that runs it), it
writes the time into the trial's ``sesemi:heartbeat`` user attribute every ``interval`` seconds, from a daemon
thread. A running trial whose heartbeat is older than the sweep's grace period lost its process
(:func:`sesemi.sweep.study.heartbeat_age`, :mod:`sesemi.sweep.continuation`)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable

import optuna

from sesemi.compat import optuna as compat
from sesemi.sweep.study import HEARTBEAT

log = logging.getLogger("sesemi.sweep")


class Heartbeat:
    """Writes a trial's heartbeat every ``interval`` seconds from a daemon thread, while in the ``with`` block."""

    def __init__(self, study: optuna.Study, trial_ids: Iterable[int], interval: float) -> None:
        self.study = study
        self.trial_ids = list(trial_ids)
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sesemi-heartbeat", daemon=True)

    def beat(self) -> None:
        for trial_id in list(self.trial_ids):
            try:
                compat.set_trial_attr(self.study, trial_id, HEARTBEAT, time.time())
            except optuna.exceptions.UpdateFinishedTrialError:
                self.trial_ids.remove(trial_id)
            except Exception as err:  # noqa: BLE001 - a storage hiccup must not kill the trial
                log.warning("heartbeat of trial id %d not written: %s", trial_id, err)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            if not self.trial_ids:
                return
            self.beat()

    def __enter__(self) -> Heartbeat:  # noqa: PYI034
        self.beat()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
