"""One Optuna trial, run in this process: its overrides, its training with the trial callback, its outcome.

The process that runs a trial records its outcome in the study itself (COMPLETE with the value, PRUNED, or FAIL with
the error), so the outcome is stored even when nobody is left to receive a return value (a detached sweep). The
trial callback (report, prune, hyperparameters) reaches training through the app's task function
(``callbacks=``), which hands it to the run's :class:`~sesemi.runtime.Runtime`.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import socket
import time
import traceback
from pathlib import Path
from typing import Any

import optuna
from omegaconf import DictConfig
from optuna.trial import TrialState

from sesemi.compat import optuna as compat
from sesemi.errors import ConfigError
from sesemi.rundir import RunRecord, RunState, is_run_dir, read_metrics, slurm_job_id
from sesemi.runtime import RunStopped
from sesemi.sweep import continuation, stop
from sesemi.sweep import repeats as repeats_lib
from sesemi.sweep import study as study_lib
from sesemi.sweep.callback import OptunaTrialCallback, TrialContext
from sesemi.sweep.heartbeat import Heartbeat
from sesemi.sweep.settings import SweepSettings
from sesemi.sweepdir import trial_subdir

log = logging.getLogger("sesemi.sweep")


def overrides(settings: SweepSettings, trial: optuna.Trial, config: DictConfig | None) -> list[str]:
    """Sample the trial's parameters and return its job overrides (its run dir: ``<sweep dir>/trial_NNNN``)."""
    study_lib.suggest(trial, settings.distributions)
    if settings.custom_search_space:
        from sesemi.compat.hydra import instantiate

        extend = instantiate({"_target_": settings.custom_search_space, "_partial_": True})
        extend(config, trial)
    params = {**trial.params, **settings.fixed_params}
    return [
        *(f"{name}={value}" for name, value in params.items()),
        *settings.fixed_overrides,
        f"hydra.sweep.subdir={trial_subdir(trial.number)}",
    ]


def describe(err: BaseException) -> str:
    text = f"{type(err).__name__}: {err}"
    return text if len(text) < 2000 else text[:1997] + "..."


def _related(key: str, names: list[str]) -> bool:
    key = key.lstrip("+~")
    return any(n == key or n.startswith(key + ".") or key.startswith(n + ".") for n in (x.lstrip("+~") for x in names))


def run(
    study: optuna.Study,
    trial: optuna.Trial,
    cfg: DictConfig,
    task_function: Any,
    settings: SweepSettings,
    worker: str,
    repeat: int | None = None,
) -> Any:
    """Run one trial (or, with seed repeats, repeat ``repeat`` of it) in this process and record its outcome in the
    study; returns the value (None if not COMPLETE).

    Exceptions of the training are recorded (FAIL with the error), not raised: the sweep goes on. A stop from outside
    (a signal's checkpoint and stop, Ctrl-C, and any error of a trial whose process got SIGTERM, e.g. its data loader
    workers terminated first) leaves the trial RUNNING, to be continued from its checkpoint
    (:mod:`sesemi.sweep.continuation`), and is re-raised.
    """
    from lightning_utilities.core.rank_zero import rank_zero_only

    if getattr(rank_zero_only, "rank", 0) != 0:
        # A multi-process trial (submitit tasks): only rank 0 talks to the study; the others just train.
        return float(task_function(cfg))
    run_dir = str(cfg.run.output_dir)
    trial_id = compat.trial_id(trial)
    for key, value in {
        study_lib.RUN_DIR: run_dir,
        "session": settings.session,
        "worker": worker,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "slurm_job_id": slurm_job_id(),
    }.items():
        trial.set_user_attr(key, value)
    frozen = compat.frozen(study, trial_id)
    if not continuation.begin_attempt(study, frozen, worker, settings.max_retries, Path(run_dir)):
        return None  # stopped too often without progress: failed
    monitors = [name for name, _ in settings.objectives] if len(settings.objectives) > 1 else []
    context = TrialContext(
        trial=trial,
        monitor=str(cfg.run.objective),
        params=dict(trial.params),
        monitors=monitors,
        repeat=repeat,
        repeats=settings.repeats,
    )
    train = functools.partial(task_function, callbacks=[OptunaTrialCallback(context)])
    which = "" if repeat is None else f" seed {cfg.run.seed}"
    log.info("trial %d%s (%s): %s -> %s", trial.number, which, worker, trial.params, run_dir)
    outcome: tuple[TrialState, Any] | None = None
    started = time.perf_counter()
    try:
        with Heartbeat(study, [trial_id], settings.heartbeat_interval):
            try:
                value = float(train(cfg))
                # Several objectives: each one's value at the run's end (one model, one point).
                values = [_final(run_dir, m) for m in monitors] if monitors else [value]
                outcome = (TrialState.PRUNED, context.pruned) if context.pruned else (TrialState.COMPLETE, values)
            except Exception as err:
                if stop.received():
                    raise KeyboardInterrupt(f"SIGTERM; then {describe(err)}") from err
                outcome = (TrialState.FAIL, err)
    except BaseException as err:  # stopped from outside: the trial stays RUNNING and continues from its checkpoint
        requeued = isinstance(err, RunStopped) and err.state == RunState.REQUEUED
        why = str(err) if isinstance(err, RunStopped) else describe(err)
        # A requeued job comes back and continues the trial itself; anything else is continued by whoever takes it.
        continuation.stopped(study, trial_id, why, at_once=not requeued)
        raise
    objective = ", ".join(monitors) if monitors else str(cfg.run.objective)
    if repeat is not None and outcome[0] == TrialState.COMPLETE:
        stats = repeats_lib.record_end(study, trial_id, repeat, settings.repeats, outcome[1], settings.repeat_base)
        if stats is None:  # the trial waits for its other seeds
            log.info("trial %d seed %s ended: %s = %s", trial.number, cfg.run.seed, objective, _shown(outcome[1]))
            return None
        outcome = (TrialState.COMPLETE, stats["mean"])
    return _record(study, trial, outcome, objective, run_dir, time.perf_counter() - started, bool(monitors))


def _tell(study: optuna.Study, trial: optuna.Trial, **outcome: Any) -> None:
    """``Study.tell``, unless another process (another seed of the trial) told it first."""
    with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
        study.tell(trial, skip_if_finished=True, **outcome)


def _final(run_dir: str, metric: str) -> float:
    return float((read_metrics(run_dir) or {}).get("final", {}).get(metric, math.nan))


def _shown(values: list[float]) -> str:
    return ", ".join(f"{v:.5g}" for v in values)


def _record(
    study: optuna.Study,
    trial: optuna.Trial,
    outcome: tuple[TrialState, Any],
    objective: str,
    run_dir: str,
    s: float,
    several: bool,
) -> Any:
    state, result = outcome
    trial_id = compat.trial_id(trial)
    if state == TrialState.COMPLETE and any(math.isnan(v) for v in result):
        state, result = TrialState.FAIL, FloatingPointError(f"{objective} is NaN")
    if state == TrialState.COMPLETE:
        _tell(study, trial, values=result)  # a trial's last seeds may end at once: the first tells
        log.info("trial %d complete: %s = %s (%.0fs)", trial.number, objective, _shown(result), s)
        return result if several else result[0]
    if state == TrialState.PRUNED:
        if is_run_dir(run_dir):
            RunRecord(run_dir).update(state=RunState.PRUNED.value, pruned=result)
        with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
            trial.set_user_attr("pruned", result)
        _tell(study, trial, state=TrialState.PRUNED)
        log.info("trial %d pruned: %s (%.0fs)", trial.number, result, s)
        return None
    fatal = isinstance(result, ConfigError) and not _related(result.key, list(trial.params))
    study_lib.fail_trial(
        study,
        trial_id,
        describe(result),
        fatal=fatal,
        traceback="".join(traceback.format_exception(result)),
    )
    # A configuration error says all there is to say; anything else gets its traceback (in the trial's log too).
    log.error(
        "trial %d failed: %s",
        trial.number,
        describe(result),
        exc_info=None if isinstance(result, ConfigError) else result,
    )
    return None
