"""What runs where the trials run: one trial (synchronous mode) or a worker's loop over trials (asynchronous mode).

The sweeper hands the launcher a :class:`SweepTask` instead of the bare training function. In a trial job
(``SESEMI_SWEEP_TRIAL`` set) it runs that trial with :func:`run_trial`; in a worker job (``SESEMI_SWEEP_WORKER``
set) it loops: take a waiting trial → sample its parameters → compose its config → run it in-process with the
pruning callback → tell the study → take the next, until no trial is left (a detached sweep's worker: until
no trial waits or runs, reaping lost ones meanwhile, then it writes ``optimization_results.yaml``). Either way
the process that ran the trial records its outcome in the study itself (COMPLETE with the value, PRUNED, or FAIL
with the error), so the outcome is stored even when nobody is left to receive a return value.
"""

from __future__ import annotations

import copy
import functools
import logging
import math
import os
import socket
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

import optuna
from omegaconf import DictConfig, open_dict
from optuna.trial import TrialState

from sesemi import resolvers
from sesemi.compat import hydra as hydra_compat
from sesemi.compat import optuna as compat
from sesemi.errors import ConfigError
from sesemi.rundir import slurm_job_id
from sesemi.runtime import RunStopped
from sesemi.sweep import stop
from sesemi.sweep import storage as storage_lib
from sesemi.sweep import study as study_lib
from sesemi.sweep.callback import TrialContext, set_active_trial

log = logging.getLogger("sesemi.sweep")

resolvers.register()
storage_lib.register()

TRIAL_ENV = "SESEMI_SWEEP_TRIAL"
WORKER_ENV = "SESEMI_SWEEP_WORKER"
CALLBACK_KEY = "optuna_trial"


def trial_subdir(number: int) -> str:
    return f"trial_{number:04d}"


@dataclass
class SweepSettings:
    """Everything a trial job or a worker needs to find the study and run trials (plain, picklable data)."""

    study_name: str
    storage: str | None  # a spec without password (see sesemi.sweep.storage)
    sweep_dir: str
    session: str
    n_trials: int
    max_failure_rate: float = 0.0
    max_retries: int | None = 2
    heartbeat_interval: float = 30.0
    grace_period: float = 120.0
    sampler: dict[str, Any] | None = None
    pruner: dict[str, Any] | None = None
    distributions: dict[str, Any] = field(default_factory=dict)
    fixed_params: dict[str, Any] = field(default_factory=dict)
    fixed_overrides: list[str] = field(default_factory=list)
    custom_search_space: str | None = None
    grid_space: dict[str, list[Any]] | None = None
    poll_interval: float = 2.0
    detached: bool = False  # no sweeper process: a worker waits for the others' trials (and their retries) to end


def _instantiate(node: dict[str, Any]) -> Any:
    from hydra.utils import UNSAFE_DISABLE_EXECUTION_CHECKS, instantiate

    # Like every sesemi config, the sampler/pruner _target_ may be the user's own class.
    return instantiate(node, _execution_whitelist_=UNSAFE_DISABLE_EXECUTION_CHECKS)


# Samplers that keep their place in a sequence in the study itself: their seed is the sequence's, never varied.
_STUDY_SEQUENCED = ("QMCSampler",)


def sampler_for_trial(settings: SweepSettings, number: int | None = None) -> optuna.samplers.BaseSampler:
    """The sampler that draws trial ``number``'s parameters.

    A seeded sampler is seeded from ``(sampler.seed, trial number)``: trial numbers are never reused in a study, so a
    resumed sweep, a second sweep command and every worker (replacements included) draw new parameters, and the same
    seed with the same history draws the same ones. (Seeding each sweep command or worker with ``sampler.seed`` alone
    repeats the first draws after every resume.)
    """
    if not settings.sampler:
        return optuna.samplers.TPESampler()
    node = dict(settings.sampler)
    target = str(node.get("_target_", ""))
    if number is not None and node.get("seed") is not None and not target.endswith(_STUDY_SEQUENCED):
        import numpy as np

        node["seed"] = int(np.random.SeedSequence([int(node["seed"]), number]).generate_state(1)[0])
    sampler = _instantiate(node)
    if isinstance(sampler, functools.partial):
        if settings.grid_space is None:
            raise ConfigError("hydra.sweeper.sampler", "a partial sampler is only supported for the grid", "")
        sampler = sampler(search_space=settings.grid_space)
    return sampler


def build_pruner(settings: SweepSettings) -> optuna.pruners.BasePruner:
    return _instantiate(dict(settings.pruner)) if settings.pruner else optuna.pruners.NopPruner()


def load_study(settings: SweepSettings) -> optuna.Study:
    """The sweep's study (its sampler is replaced per trial, see :func:`sampler_for_trial`)."""
    return optuna.load_study(
        study_name=settings.study_name,
        storage=storage_lib.make_storage(settings.storage, settings.sweep_dir),
        sampler=sampler_for_trial(settings),
        pruner=build_pruner(settings),
    )


def take_trial(study: optuna.Study, settings: SweepSettings) -> optuna.Trial | None:
    """The next waiting trial of the study, its parameters to be drawn by its own sampler; None when none waits."""
    return study_lib.pop_trial(study, functools.partial(sampler_for_trial, settings))


def trial_overrides(settings: SweepSettings, trial: optuna.Trial, config: DictConfig | None) -> list[str]:
    """Sample the trial's parameters and return its job overrides (its run dir: ``<sweep dir>/trial_NNNN``)."""
    study_lib.suggest(trial, settings.distributions)
    if settings.custom_search_space:
        from hydra.utils import UNSAFE_DISABLE_EXECUTION_CHECKS, instantiate

        extend = instantiate(
            {"_target_": settings.custom_search_space, "_partial_": True},
            _execution_whitelist_=UNSAFE_DISABLE_EXECUTION_CHECKS,
        )
        extend(config, trial)
    params = {**trial.params, **settings.fixed_params}
    return [
        *(f"{name}={value}" for name, value in params.items()),
        *settings.fixed_overrides,
        f"hydra.sweep.subdir={trial_subdir(trial.number)}",
    ]


def _related(key: str, names: list[str]) -> bool:
    key = key.lstrip("+~")
    return any(n == key or n.startswith(key + ".") or key.startswith(n + ".") for n in (x.lstrip("+~") for x in names))


def _describe(err: BaseException) -> str:
    text = f"{type(err).__name__}: {err}"
    return text if len(text) < 2000 else text[:1997] + "..."


def _mark_run_dir(run_dir: str, **fields: Any) -> None:
    from sesemi.rundir import RunRecord, is_run_dir

    if is_run_dir(run_dir):
        RunRecord(run_dir).update(**fields)


def _interrupted(study: optuna.Study, trial: optuna.Trial, settings: SweepSettings, why: str, run_dir: str) -> None:
    """The trial was stopped from outside (Ctrl-C, SIGTERM): FAIL with the reason, its run dir too, retried now."""
    reason = f"interrupted: {why}"
    frozen = compat.frozen(study, compat.trial_id(trial))
    if study_lib.fail_trial(study, compat.trial_id(trial), reason):
        study_lib.mark_run_dir_failed(run_dir, reason)
        study_lib.retry(study, frozen, settings.max_retries)


def run_trial(
    study: optuna.Study,
    trial: optuna.Trial,
    cfg: DictConfig,
    task_function: Any,
    settings: SweepSettings,
    worker: str,
) -> float | None:
    """Run one trial in this process and record its outcome in the study; returns the value (None if not COMPLETE).

    Exceptions of the training are recorded (FAIL with the error), not raised: the sweep goes on. An interrupt
    (Ctrl-C, SIGTERM) marks the trial FAIL, enqueues its retry and is re-raised; so does any error of a trial whose
    process got SIGTERM (e.g. its data loader workers were terminated first).
    """
    from pytorch_lightning.utilities import rank_zero_only

    if getattr(rank_zero_only, "rank", 0) != 0:
        # A multi-process trial (submitit tasks): only rank 0 talks to the study; the others just train.
        return float(task_function(cfg))
    run_dir = str(cfg.run.output_dir)
    for key, value in {
        study_lib.RUN_DIR: run_dir,
        "session": settings.session,
        "worker": worker,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "slurm_job_id": slurm_job_id(),
    }.items():
        trial.set_user_attr(key, value)
    context = TrialContext(trial=trial, monitor=str(cfg.run.objective), params=dict(trial.params))
    cfg = copy.deepcopy(cfg)
    with open_dict(cfg):
        if cfg.get("callbacks") is None:
            cfg.callbacks = {}
        cfg.callbacks[CALLBACK_KEY] = {"_target_": "sesemi.sweep.callback.OptunaTrialCallback"}
    log.info("trial %d (%s): %s -> %s", trial.number, worker, trial.params, run_dir)
    set_active_trial(context)
    outcome: tuple[TrialState, Any] | None = None
    started = time.perf_counter()
    try:
        with study_lib.Heartbeat(study, [compat.trial_id(trial)], settings.heartbeat_interval):
            try:
                value = float(task_function(cfg))
                outcome = (TrialState.PRUNED, context.pruned) if context.pruned else (TrialState.COMPLETE, value)
            except Exception as err:
                if stop.received():
                    raise KeyboardInterrupt(f"SIGTERM; then {_describe(err)}") from err
                outcome = (TrialState.FAIL, err)
    except BaseException as err:  # interrupted (Ctrl-C, SIGTERM of a preempted or cancelled job): retry it now
        if isinstance(err, RunStopped):  # the run's own signal handling checkpointed and stopped it
            why = str(err)
        else:
            why = "SIGTERM (scancel, preemption or time limit)" if stop.received() else _describe(err)
        _interrupted(study, trial, settings, why, run_dir)
        raise
    finally:
        set_active_trial(None)
    state, result = outcome
    seconds = time.perf_counter() - started
    if state == TrialState.COMPLETE and math.isnan(result):
        state, result = TrialState.FAIL, FloatingPointError(f"{cfg.run.objective} is NaN")
    if state == TrialState.COMPLETE:
        study.tell(trial, result)
        log.info("trial %d complete: %s = %.5g (%.0fs)", trial.number, cfg.run.objective, result, seconds)
        return result
    if state == TrialState.PRUNED:
        trial.set_user_attr("pruned", result)
        study.tell(trial, state=TrialState.PRUNED)
        _mark_run_dir(run_dir, state="pruned", pruned=result)
        log.info("trial %d pruned: %s (%.0fs)", trial.number, result, seconds)
        return None
    fatal = isinstance(result, ConfigError) and not _related(result.key, list(trial.params))
    study_lib.fail_trial(
        study,
        compat.trial_id(trial),
        _describe(result),
        fatal=fatal,
        traceback="".join(traceback.format_exception(result)),
    )
    # A configuration error says all there is to say; anything else gets its traceback (in the trial's log too).
    log.error(
        "trial %d failed: %s",
        trial.number,
        _describe(result),
        exc_info=None if isinstance(result, ConfigError) else result,
    )
    return None


class SweepTask:
    """The task function the sweeper gives the launcher: a trial job, a worker job, or the plain training run."""

    def __init__(self, task_function: Any, hydra_context: Any, config: DictConfig) -> None:
        self.task_function = task_function
        self.hydra_context = hydra_context
        self.config = config
        self.settings: SweepSettings | None = None

    def __call__(self, cfg: DictConfig) -> Any:
        if os.environ.get(WORKER_ENV) is not None:
            return run_worker(self, int(os.environ[WORKER_ENV]))
        if os.environ.get(TRIAL_ENV) is not None:
            return self.run_trial_job(cfg, int(os.environ[TRIAL_ENV]))
        return self.task_function(cfg)

    def run_trial_job(self, cfg: DictConfig, number: int) -> float | None:
        """Synchronous mode: the sweeper took the trial and sampled it; this job runs it and tells the result."""
        settings = self.settings
        stop.watch()
        study = load_study(settings)
        trial_id = compat.trial_id_of_number(study, number)
        state = compat.frozen(study, trial_id).state
        if state != TrialState.RUNNING:
            # A requeued job (SLURM preemption) whose trial was given up meanwhile: its retry runs elsewhere.
            log.warning("trial %d is %s already: this job has nothing to run", number, state.name)
            return None
        trial = optuna.Trial(study, trial_id)
        return run_trial(study, trial, cfg, self.task_function, settings, worker=f"job@{socket.gethostname()}")


def _trial_job(study: optuna.Study, trial: optuna.Trial, task: SweepTask, worker: str, cfg: DictConfig) -> Any:
    return run_trial(study, trial, cfg, task.task_function, task.settings, worker)


def worker_subdir(session: str, index: int) -> str:
    return f"workers/{session}/w{index}"


def _take_trials(task: SweepTask, name: str, worker_hydra: Any) -> int:
    from hydra.core.utils import JobStatus, configure_log, run_job

    settings = task.settings
    study = load_study(settings)
    log.info("worker %s on study %s (%s)", name, settings.study_name, storage_lib.mask(settings.storage))
    ran = 0
    waiter = study_lib.OthersWaiter(study, settings.grace_period, settings.max_retries, settings.poll_interval)
    while True:
        reason = study_lib.abort_reason(study, settings.session)
        if reason:
            log.error("worker %s stops: %s", name, reason)
            break
        if stop.received():
            log.warning("worker %s stops: it got SIGTERM", name)
            break
        study_lib.reap_stale(study, settings.grace_period, settings.max_retries)
        trial = take_trial(study, settings)
        if trial is None:
            if settings.detached and waiter():
                continue
            break
        ran += 1
        trial.set_user_attr("session", settings.session)
        try:
            overrides = trial_overrides(settings, trial, task.config)
        except Exception as err:  # noqa: BLE001 - the search space itself is broken: stop the sweep
            study_lib.fail_trial(study, compat.trial_id(trial), f"search space: {_describe(err)}", fatal=True)
            study_lib.set_abort(study, settings.session, f"the search space is broken: {_describe(err)}")
            continue
        try:
            config = task.hydra_context.config_loader.load_sweep_config(task.config, overrides)
            with open_dict(config):
                config.hydra.job.id = trial_subdir(trial.number)
                config.hydra.job.num = trial.number
        except Exception as err:  # noqa: BLE001 - a sampled value the config cannot take
            study_lib.fail_trial(study, compat.trial_id(trial), f"config: {_describe(err)}")
            log.error("trial %d: its config could not be composed: %s", trial.number, err)
        else:
            ret = run_job(
                hydra_context=task.hydra_context,
                task_function=functools.partial(_trial_job, study, trial, task, name),
                config=config,
                job_dir_key="hydra.sweep.dir",
                job_subdir_key="hydra.sweep.subdir",
            )
            error = hydra_compat.job_error(ret)
            still_running = compat.frozen(study, compat.trial_id(trial)).state == TrialState.RUNNING
            if ret.status == JobStatus.FAILED and still_running:  # it failed outside run_trial
                study_lib.fail_trial(study, compat.trial_id(trial), _describe(error))
            configure_log(
                worker_hydra.job_logging,
                worker_hydra.verbose,
                execution_whitelist=task.hydra_context.execution_whitelist,
            )
        reason = study_lib.check_failures(study, settings.session, settings.n_trials, settings.max_failure_rate)
        if reason:
            study_lib.set_abort(study, settings.session, reason)
    if settings.detached and not stop.received():  # the sweep ended (or stopped): no sweeper is left to say so
        abort = study_lib.abort_reason(study, settings.session)
        results = study_lib.write_results(study, settings.sweep_dir, settings.study_name, abort)
        log.info("worker %s: the sweep %s: %s", name, f"stopped ({abort})" if abort else "ended", results["trials"])
    return ran


def run_worker(task: SweepTask, index: int) -> int:
    """Asynchronous mode: take trials one after the other until none is waiting; returns how many it ran.

    A worker that got SIGTERM takes no new trial (its running trial was failed and retried, see :mod:`.stop`).
    """
    from hydra.core.hydra_config import HydraConfig

    from sesemi.rundir import RunRecord

    settings = task.settings
    stop.watch()
    worker_hydra = HydraConfig.get()
    record = RunRecord(worker_hydra.runtime.output_dir)  # the worker's own dir gets a status like any job's
    record.start()
    name = f"w{index}@{socket.gethostname()}:{os.getpid()}"
    try:
        ran = _take_trials(task, name, worker_hydra)
    except BaseException as err:  # SIGTERM, Ctrl-C: the worker's dir must not say running
        record.fail(err)
        raise
    log.info("worker %s done: %d trials", name, ran)
    record.complete({"worker": name, "trials": ran, "session": settings.session})
    return ran
