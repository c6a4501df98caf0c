"""Asynchronous mode's workers: up to ``workers`` worker jobs alive while trials wait, a dead one replaced at once.

Each slot is a thread that launches one worker job at a time through the sweeper's launcher (a local process, a
SLURM job) and waits for it. When the job ends (it ran out of trials, got SIGTERM, was killed, its node died), the
slot looks at the study: trials waiting -> it launches a replacement right away; trials still running elsewhere
(one of them may turn out lost and be continued) -> it waits and looks again; nothing left -> the slot ends.
Hydra's launchers block until their jobs end, so one thread per slot is what lets a slot notice its own job's end
while the others run. Worker k's dir is ``workers/<session>/w<k>``; numbers are never reused within a sweep.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import optuna

from sesemi.sweep import continuation
from sesemi.sweep import study as study_lib

log = logging.getLogger("sesemi.sweep")


class WorkerPool:
    def __init__(
        self,
        study: optuna.Study,
        session: str,
        slots: int,
        launch: Callable[[int], str | None],
        worker_dir: Callable[[int], str],
        poll_interval: float,
        grace_period: float,
        max_retries: int | None,
    ) -> None:
        """``launch(index)`` runs worker ``index`` and returns None (it ran) or why not (e.g. ``lost: ...``)."""
        self.study = study
        self.session = session
        self.slots = slots
        self.launch = launch
        self.worker_dir = worker_dir
        self.poll_interval = poll_interval
        self.grace_period = grace_period
        self.max_retries = max_retries
        self.launched = 0
        self._lock = threading.Lock()
        self._errors: list[BaseException] = []

    def run(self) -> None:
        if self.slots == 1:
            self._slot()  # in this thread: Hydra's basic launcher runs the worker in-process, signals need it here
            return
        threads = [threading.Thread(target=self._guarded, name=f"sesemi-worker-slot-{k}") for k in range(self.slots)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if self._errors:
            raise self._errors[0]

    def _guarded(self) -> None:
        try:
            self._slot()
        except BaseException as err:  # noqa: BLE001 - re-raised by run() in the sweeper's thread
            self._errors.append(err)
            study_lib.set_abort(self.study, self.session, f"{type(err).__name__}: {err}")

    def _next_index(self) -> int:
        with self._lock:
            self.launched += 1
            return self.launched - 1

    def _what_next(self) -> str:
        if self._errors or study_lib.abort_reason(self.study, self.session):
            return "done"
        study_lib.reap_stale(self.study, self.grace_period, self.max_retries)
        if study_lib.waiting(self.study) or continuation.lost(self.study, self.grace_period):
            return "launch"
        return "wait" if study_lib.running(self.study) else "done"

    def _ran(self, index: int) -> int:
        prefix = f"w{index}@"
        return sum(
            1
            for t in self.study.get_trials(deepcopy=False)
            if t.user_attrs.get("session") == self.session and str(t.user_attrs.get("worker", "")).startswith(prefix)
        )

    def _slot(self) -> None:
        barren = 0
        while True:
            what = self._what_next()
            if what == "done":
                return
            if what == "wait":
                time.sleep(self.poll_interval)
                continue
            index = self._next_index()
            error = self.launch(index)
            ran = self._ran(index)
            if error:
                log.warning("worker w%d ended after %d trial(s): %s", index, ran, error)
                study_lib.mark_run_dir_failed(self.worker_dir(index), error)
            barren = barren + 1 if error and not ran else 0
            if barren >= 2:
                study_lib.set_abort(
                    self.study, self.session, f"workers ended twice in a row without taking a trial; last: {error}"
                )
                return
