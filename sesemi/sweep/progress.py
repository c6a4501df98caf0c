"""What the sweeper does while its jobs run: every ``poll_interval`` seconds, fail and retry lost trials, and log
each trial as it finishes (``trial 3 COMPLETE: val/acc = 0.91 (w1@node2:4711); 5 finished, 8 waiting, 3 running``)."""

from __future__ import annotations

import logging
import threading

import optuna

from sesemi.sweep import study as study_lib

log = logging.getLogger("sesemi.sweep")


class Progress:
    def __init__(
        self,
        study: optuna.Study,
        objective: str,
        poll_interval: float,
        grace_period: float,
        max_retries: int | None,
    ) -> None:
        self.study = study
        self.objective = objective
        self.poll_interval = poll_interval
        self.grace_period = grace_period
        self.max_retries = max_retries
        self.seen: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sesemi-sweep-progress", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.poll_interval):
            try:
                self.poll()
            except Exception as err:  # noqa: BLE001 - progress lines must never break the sweep
                log.debug("progress: %s", err)

    def poll(self) -> None:
        study_lib.reap_stale(self.study, self.grace_period, self.max_retries)
        trials = self.study.get_trials(deepcopy=False)
        done = [t for t in trials if t.state.is_finished()]
        for t in done:
            if t.number in self.seen:
                continue
            self.seen.add(t.number)
            if t.state.name == "COMPLETE":
                what = f"{self.objective} = {', '.join(f'{v:.5g}' for v in t.values)}"
            elif t.state.name == "PRUNED":
                what = t.user_attrs.get("pruned", "pruned")
            else:
                what = t.user_attrs.get("error", "failed")
            log.info(
                "trial %d %s: %s (%s); %d finished, %d waiting, %d running",
                t.number,
                t.state.name,
                what,
                t.user_attrs.get("worker", "-"),
                len(done),
                sum(1 for x in trials if x.state.name == "WAITING"),
                sum(1 for x in trials if x.state.name == "RUNNING"),
            )

    def __enter__(self) -> Progress:  # noqa: PYI034
        self.seen = {t.number for t in self.study.get_trials(deepcopy=False) if t.state.is_finished()}
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
