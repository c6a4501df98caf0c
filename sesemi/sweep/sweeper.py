"""``hydra/sweeper=optuna_sync`` and ``hydra/sweeper=optuna_async``: sesemi's Optuna sweeper (a Hydra plugin).

Both read the search space, sampler, storage, ``n_trials`` and ``n_jobs`` like Hydra's own Optuna sweeper and run
every trial as a normal run dir ``<sweep dir>/trial_NNNN`` (NNNN = the Optuna trial number). What they add:

- ``mode: sync``: batches of ``n_jobs`` trials through the configured launcher (as Hydra's sweeper does), but
  resumable: re-running the command continues the study in its storage, the budget counts the old trials and
  trial dirs are never reused.
- ``mode: async``: ``workers`` (default ``n_jobs``) worker jobs through the configured launcher (local processes,
  SLURM jobs), each taking the next trial as soon as its last one ended; trials report every validation and are
  pruned by ``hydra/sweeper/pruner`` (median, successive_halving, hyperband, ...).
- failure tolerance: a crashing trial is recorded FAIL with its error and the sweep goes on until more than
  ``max_failure_rate * n_trials`` trials of this run failed; a configuration error that every trial would hit
  (``run.objective`` not logged, a bad path) stops the sweep at the first trial.
- heartbeats: a trial whose process died (killed, preempted) is failed and retried with the same parameters, up to
  ``max_retries`` times.

Only Hydra imports at module level: Hydra imports every plugin at start-up, for single runs too.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from sesemi.sweep import storage as _storage

log = logging.getLogger("sesemi.sweep")

_storage.register()  # ${sesemi.optuna_storage:...}, for hydra/sweeper=optuna (Hydra's own Optuna sweeper)


class SweepAborted(RuntimeError):
    """The sweep stopped early: too many failed trials, or a configuration error every trial would hit."""


def _quote(value: str) -> str:
    """A value for a Hydra override, quoted."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _container(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


class _Progress:
    """While jobs run: every ``interval`` seconds, fail and retry lost trials, and log the trials that finished."""

    def __init__(self, sweeper: OptunaSweeper) -> None:
        import threading

        self.sweeper = sweeper
        self.seen: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sesemi-sweep-progress", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.sweeper.poll_interval):
            try:
                self.poll()
            except Exception as err:  # noqa: BLE001 - progress lines must never break the sweep
                log.debug("progress: %s", err)

    def poll(self) -> None:
        from sesemi.sweep import study as study_lib

        sweeper = self.sweeper
        study_lib.reap_stale(sweeper.study, sweeper.grace_period, sweeper.max_retries)
        trials = sweeper.study.get_trials(deepcopy=False)
        done = [t for t in trials if t.state.is_finished()]
        for t in done:
            if t.number in self.seen:
                continue
            self.seen.add(t.number)
            if t.state.name == "COMPLETE":
                what = f"{sweeper.objective} = {t.value:.5g}"
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

    def __enter__(self) -> _Progress:  # noqa: PYI034
        self.seen = {t.number for t in self.sweeper.study.get_trials(deepcopy=False) if t.state.is_finished()}
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


class OptunaSweeper(Sweeper):
    def __init__(
        self,
        sampler: Any = None,
        pruner: Any = None,
        direction: Any = None,
        storage: Any = None,
        study_name: str | None = None,
        n_trials: int = 20,
        n_jobs: int = 1,
        mode: str = "sync",
        workers: int | None = None,
        max_failure_rate: float = 0.0,
        max_retries: int | None = 2,
        heartbeat_interval: float = 30,
        grace_period: float | None = None,
        params: Any = None,
        custom_search_space: str | None = None,
        enqueue_trials: Any = None,
        poll_interval: float = 2.0,
        dir: str | None = None,
    ) -> None:
        if mode not in ("sync", "async"):
            raise ValueError(f"hydra.sweeper.mode must be sync or async, got {mode!r}")
        if not 0.0 <= float(max_failure_rate) <= 1.0:
            raise ValueError("hydra.sweeper.max_failure_rate must be between 0 and 1")
        self.sampler_cfg = _container(sampler)
        self.pruner_cfg = _container(pruner)
        self.direction = direction
        self.storage = _container(storage)
        self.study_name = study_name
        self.n_trials = int(n_trials)
        self.n_jobs = max(1, int(n_jobs))
        self.mode = mode
        self.workers = max(1, int(workers if workers is not None else n_jobs))
        self.max_failure_rate = float(max_failure_rate)
        self.max_retries = None if max_retries is None else int(max_retries)
        self.heartbeat_interval = float(heartbeat_interval)
        self.grace_period = float(grace_period) if grace_period is not None else 4 * self.heartbeat_interval
        self.params = params
        self.custom_search_space = custom_search_space
        self.enqueue_trials = _container(enqueue_trials) or []
        self.poll_interval = float(poll_interval)
        self.dir = dir

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        from sesemi.sweep.runner import SweepTask

        self.config = config
        self.hydra_context = hydra_context
        self._set_sweep_dir(config)
        self.task = SweepTask(task_function, hydra_context, config)
        self.launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=hydra_context, task_function=self.task
        )

    def _set_sweep_dir(self, config: DictConfig) -> None:
        """``hydra.sweeper.dir`` (a fixed dir, so the same command resumes) becomes the sweep dir of every job.

        Set here, before the launcher resolves anything: a config file that overrode ``hydra.sweep.dir`` itself would
        make Hydra evaluate sesemi's timestamped default while merging (claiming an empty dir each time a trial's
        config is composed). A ``hydra.sweep.dir=...`` given on the command line wins.
        """
        from omegaconf import open_dict, read_write

        on_cli = any(
            str(o).lstrip("+").split("=", 1)[0] == "hydra.sweep.dir" for o in config.hydra.overrides.get("hydra", [])
        )
        if self.dir and not on_cli:
            with read_write(config.hydra), open_dict(config.hydra):
                config.hydra.sweep.dir = str(Path(os.path.expanduser(str(self.dir))).absolute())
        self.sweep_dir = Path(str(config.hydra.sweep.dir)).absolute()
        self.job_dir_override = "hydra.sweep.dir=" + _quote(str(self.sweep_dir))

    # ----------------------------------------------------------------------------------------------------------------
    def _direction(self) -> str:
        mode = OmegaConf.select(self.config, "run.objective_mode")
        implied = {"max": "maximize", "min": "minimize"}.get(str(mode)) if mode is not None else None
        direction = self.direction
        if OmegaConf.is_config(direction) or isinstance(direction, (list, tuple)):
            raise ValueError("sesemi sweeps optimise one objective (run.objective): give one direction")
        if hasattr(direction, "name"):
            direction = direction.name
        if direction is None:
            return implied or "maximize"
        direction = str(direction)
        if implied and direction != implied:
            from sesemi.errors import ConfigError

            raise ConfigError(
                "hydra.sweeper.direction",
                f"is {direction} but run.objective_mode={mode} ({OmegaConf.select(self.config, 'run.objective')})",
                f"set hydra.sweeper.direction={implied}, or leave it null to follow run.objective_mode",
            )
        return direction

    def _settings(self, arguments: list[str], session: str, storage_spec: Any) -> Any:
        from hydra_plugins.hydra_optuna_sweeper._impl import create_params_from_overrides

        from sesemi.sweep.runner import SweepSettings

        params = [f"{k!s}={v}" for k, v in (self.params or {}).items()] + list(arguments)
        distributions, fixed_params, fixed_overrides = create_params_from_overrides(params)
        for name in fixed_params:
            distributions.pop(name, None)
        grid = None
        sampler_target = str((self.sampler_cfg or {}).get("_target_", ""))
        if sampler_target.endswith("GridSampler"):
            from hydra_plugins.hydra_optuna_sweeper._impl import OptunaSweeperImpl

            grid = {n: OptunaSweeperImpl._to_grid_sampler_choices(d) for n, d in distributions.items()}
            size = 1
            for values in grid.values():
                size *= len(values)
            if size < self.n_trials:
                log.info("grid sampler: n_trials %d -> %d (the grid's size)", self.n_trials, size)
                self.n_trials = size
        return SweepSettings(
            study_name=self.study_name,
            storage=storage_spec,
            sweep_dir=str(self.sweep_dir),
            session=session,
            n_trials=self.n_trials,
            max_failure_rate=self.max_failure_rate,
            max_retries=self.max_retries,
            heartbeat_interval=self.heartbeat_interval,
            grace_period=self.grace_period,
            sampler=self.sampler_cfg,
            pruner=self.pruner_cfg,
            distributions=distributions,
            fixed_params=fixed_params,
            fixed_overrides=[*fixed_overrides, self.job_dir_override],
            custom_search_space=self.custom_search_space,
            grid_space=grid,
        )

    def _storage_spec(self) -> Any:
        from sesemi.sweep import storage as storage_lib

        spec = self.storage
        if spec is not None and not isinstance(spec, str):
            raise ValueError(
                "hydra.sweeper.storage must be a journal file path or a database URL for sesemi's sweeper "
                "(the ${sesemi.optuna_storage:...} resolver is for hydra/sweeper=optuna)"
            )
        if storage_lib.has_password(spec):
            from sqlalchemy.engine import make_url

            log.warning(
                "the storage URL holds a password: it is written into every run dir's .hydra/hydra.yaml. "
                "Leave it out of the URL and export %s (or PGPASSWORD for PostgreSQL) instead",
                storage_lib.PASSWORD_ENV,
            )
            os.environ.setdefault(storage_lib.PASSWORD_ENV, make_url(spec).password)
            spec = storage_lib.strip_password(spec)
        return spec

    # ----------------------------------------------------------------------------------------------------------------
    def sweep(self, arguments: list[str]) -> None:
        import optuna

        from sesemi.sweep import storage as storage_lib
        from sesemi.sweep import study as study_lib
        from sesemi.sweep.runner import build_pruner, build_sampler

        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        if not self.study_name:
            self.study_name = self.sweep_dir.name
        session = f"{time.strftime('%Y%m%d_%H%M%S')}-{os.getpid()}"
        spec = self._storage_spec()
        settings = self._settings(arguments, session, spec)
        self.task.settings = settings
        self.settings = settings
        direction = self._direction()
        if self.mode == "async":
            devices, nodes = (
                OmegaConf.select(self.config, "run.devices"),
                OmegaConf.select(self.config, "run.num_nodes"),
            )
            if devices not in (None, 1) or nodes not in (None, 1):
                from sesemi.errors import ConfigError

                raise ConfigError(
                    "run.devices",
                    f"is {devices} (num_nodes {nodes}): asynchronous workers run one process per trial",
                    "use run.devices=1 with hydra/sweeper=optuna_async, or hydra/sweeper=optuna_sync for "
                    "multi-device trials",
                )

        storage = storage_lib.make_storage(spec, self.sweep_dir)
        self.study = study = optuna.create_study(
            study_name=self.study_name,
            storage=storage,
            sampler=build_sampler(settings),
            pruner=build_pruner(settings),
            direction=direction,
            load_if_exists=True,
        )
        if study.direction.name.lower() != direction:
            raise ValueError(
                f"study {self.study_name!r} in {storage_lib.mask(spec)} was created to {study.direction.name.lower()}, "
                f"not {direction}: use another hydra.sweeper.study_name"
            )
        trials = study.get_trials(deepcopy=False)
        new_study = not trials
        objective = self.objective = str(OmegaConf.select(self.config, "run.objective"))
        journal = storage_lib.journal_path(spec, self.sweep_dir)
        info = {
            "study_name": self.study_name,
            "storage": str(journal) if journal else storage_lib.mask(spec),
            "sweep_dir": str(self.sweep_dir),
            "direction": direction,
            "objective": objective,
            "mode": self.mode,
            "n_trials": self.n_trials,
            "search_space": {k: str(v) for k, v in settings.distributions.items()},
            "fixed_params": settings.fixed_params,
        }
        study._storage.set_study_system_attr(study._study_id, study_lib.SESSION, session)
        if new_study:
            study._storage.set_study_system_attr(study._study_id, "sesemi:sweep", info)
        (self.sweep_dir / "sweep.json").write_text(
            json.dumps({**info, "journal": journal is not None}, indent=2, default=str) + "\n"
        )
        if new_study:
            for params in self.enqueue_trials:
                study.enqueue_trial(dict(params))
        study_lib.reap_stale(study, self.grace_period, self.max_retries)
        added = study_lib.top_up(study, self.n_trials)
        counted = study_lib.counted(study.get_trials(deepcopy=False))
        log.info(
            "study %s (%s, %s %s): %d of n_trials=%d trials exist%s, %d to run; sweep dir %s",
            self.study_name,
            storage_lib.mask(spec),
            direction,
            objective,
            len(counted) - added,
            self.n_trials,
            "" if new_study else " (resumed)",
            sum(1 for t in counted if t.state.name in ("WAITING", "RUNNING")),
            self.sweep_dir,
        )
        if self.mode == "sync":
            self._sweep_sync()
        else:
            self._sweep_async()
        self._check_abort()
        self._finish()

    # ----------------------------------------------------------------------------------------------------------------
    def _parallel_local(self, parallel: int) -> bool:
        from hydra._internal.core_plugins.basic_launcher import BasicLauncher

        return parallel > 1 and isinstance(self.launcher, BasicLauncher)

    def _launch(
        self, overrides: list[list[str]], initial_job_idx: int, names: list[str], poll: Any
    ) -> list[str | None]:
        """Launch jobs and wait (logging the trials as they finish); per job None (it ran) or why not."""
        with _Progress(self):
            return self._launch_jobs(overrides, initial_job_idx, names, poll)

    def _launch_jobs(
        self, overrides: list[list[str]], initial_job_idx: int, names: list[str], poll: Any
    ) -> list[str | None]:
        if self._parallel_local(len(overrides)):
            from sesemi.sweep.local import LocalProcesses

            runner = LocalProcesses(
                self.hydra_context, self.config, self.task, self.sweep_dir / ".jobs" / self.settings.session
            )
            self.local = runner
            return runner.launch(overrides, initial_job_idx, names, poll=poll)
        try:
            returns = self.launcher.launch(overrides, initial_job_idx=initial_job_idx)
        except Exception as err:  # noqa: BLE001 - e.g. a SLURM job killed: submitit raises for the whole batch
            log.error("launcher: %s: %s", type(err).__name__, err)
            return [f"lost: {type(err).__name__}: {str(err)[:500]}"] * len(overrides)
        errors: list[str | None] = []
        for ret in returns:
            if ret.status.name == "FAILED":
                err = ret._return_value
                errors.append(f"{type(err).__name__}: {err}")
            else:
                errors.append(None)
        return errors

    def _check_abort(self) -> None:
        from sesemi.sweep import study as study_lib

        reason = study_lib.abort_reason(self.study, self.settings.session) or study_lib.check_failures(
            self.study, self.settings.session, self.n_trials, self.max_failure_rate
        )
        if reason:
            study_lib.set_abort(self.study, self.settings.session, reason)
            self._finish(aborted=reason)

    def _wait_for_others(self) -> bool:
        """Trials still running elsewhere (or lost and not yet noticed): wait, reaping; True when something waits."""
        from sesemi.sweep import study as study_lib

        study_lib.reap_stale(self.study, self.grace_period, self.max_retries)
        if study_lib.waiting(self.study):
            return True
        others = study_lib.running(self.study)
        if not others:
            return False
        log.info(
            "waiting for %d running trial(s) %s (another process's, or lost: failed and retried after "
            "grace_period=%.0fs)",
            len(others),
            [t.number for t in others],
            self.grace_period,
        )
        time.sleep(max(1.0, min(self.poll_interval, self.grace_period / 2)))
        return True

    def _sweep_sync(self) -> None:
        from sesemi.sweep import study as study_lib
        from sesemi.sweep.runner import TRIAL_ENV, trial_overrides, trial_subdir

        settings, study = self.settings, self.study
        while True:
            self._check_abort()
            study_lib.reap_stale(study, self.grace_period, self.max_retries)
            batch = []
            while len(batch) < self.n_jobs:
                trial = study_lib.pop_trial(study)
                if trial is None:
                    break
                study._storage.set_trial_user_attr(trial._trial_id, "session", settings.session)
                try:
                    overrides = trial_overrides(settings, trial, self.config)
                except Exception as err:  # noqa: BLE001 - the search space itself is broken: stop
                    study_lib.fail_trial(
                        study, trial._trial_id, f"search space: {type(err).__name__}: {err}", fatal=True
                    )
                    self._check_abort()
                    continue
                batch.append((trial, [*overrides, f"++hydra.job.env_set.{TRIAL_ENV}={trial.number}"]))
            if not batch:
                if self._wait_for_others():
                    continue
                break
            ids = [t._trial_id for t, _ in batch]
            for trial, _ in batch:
                study._storage.set_trial_user_attr(
                    trial._trial_id, study_lib.RUN_DIR, str(self.sweep_dir / trial_subdir(trial.number))
                )
            # The sweeper beats for its trials while they wait in a queue; the trial jobs beat too once they run.
            with study_lib.Heartbeat(study._storage, ids, self.heartbeat_interval):
                errors = self._launch(
                    [o for _, o in batch], batch[0][0].number, [trial_subdir(t.number) for t, _ in batch], poll=None
                )
            for (trial, _), error in zip(batch, errors):
                frozen = study._storage.get_trial(trial._trial_id)
                if frozen.state.name != "RUNNING":
                    continue
                if error is None or error.startswith("lost"):
                    reason = error or "lost: the trial job ended without recording a result"
                    if study_lib.fail_trial(study, trial._trial_id, reason):
                        study_lib.retry(study, frozen, self.max_retries)
                else:
                    study_lib.fail_trial(study, trial._trial_id, error)

    def _sweep_async(self) -> None:
        from sesemi.sweep import study as study_lib
        from sesemi.sweep.runner import WORKER_ENV

        study = self.study
        rounds = 0
        stalled = 0
        while True:
            self._check_abort()
            study_lib.reap_stale(study, self.grace_period, self.max_retries)
            pending = len(study_lib.waiting(study))
            if not pending:
                if self._wait_for_others():
                    continue
                break
            n = min(self.workers, pending)
            finished_before = sum(1 for t in study.get_trials(deepcopy=False) if t.state.is_finished())
            names = [f"r{rounds}_w{k}" for k in range(n)]
            overrides = [
                [
                    *(f"{key}={value}" for key, value in self.settings.fixed_params.items()),
                    *self.settings.fixed_overrides,
                    f"hydra.sweep.subdir=workers/{self.settings.session}/{name}",
                    f"++hydra.job.env_set.{WORKER_ENV}={k}",
                ]
                for k, name in enumerate(names)
            ]
            log.info("round %d: %d worker(s) for %d waiting trial(s)", rounds, n, pending)
            errors = self._launch(overrides, 0, names, poll=None)
            for name, error in zip(names, errors):
                if error:
                    log.warning("worker %s: %s", name, error)
            rounds += 1
            finished = sum(1 for t in study.get_trials(deepcopy=False) if t.state.is_finished())
            stalled = stalled + 1 if finished == finished_before else 0
            if stalled >= 2:
                self._finish(aborted=f"workers ended twice without finishing a trial: {errors}")

    # ----------------------------------------------------------------------------------------------------------------
    def _finish(self, aborted: str | None = None) -> None:
        from sesemi.sweep import study as study_lib

        study = self.study
        trials = study.get_trials(deepcopy=False)
        states: dict[str, int] = {}
        retried = study_lib.retried_numbers(trials)
        for t in trials:
            name = "RETRIED" if t.number in retried else t.state.name
            states[name] = states.get(name, 0) + 1
        results: dict[str, Any] = {"name": "sesemi-optuna", "study_name": self.study_name, "trials": states}
        complete = [t for t in trials if t.state.name == "COMPLETE"]
        if complete:
            best = study.best_trial
            results.update(
                best_trial=best.number,
                best_params=best.params,
                best_value=best.value,
                best_run_dir=best.user_attrs.get(study_lib.RUN_DIR),
            )
            log.info(
                "best trial %d: %s = %.5g with %s",
                best.number,
                OmegaConf.select(self.config, "run.objective"),
                best.value,
                best.params,
            )
        if aborted:
            results["aborted"] = aborted
        OmegaConf.save(
            OmegaConf.create(json.loads(json.dumps(results, default=str))), self.sweep_dir / "optimization_results.yaml"
        )
        log.info("trials: %s; report: python -m sesemi.sweep_report %s", states, self.sweep_dir)
        if aborted:
            raise SweepAborted(aborted)
