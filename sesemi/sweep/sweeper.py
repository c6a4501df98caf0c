"""``hydra/sweeper=optuna_sync`` and ``hydra/sweeper=optuna_async``: sesemi's Optuna sweeper (a Hydra plugin).

Both read the search space, sampler, storage, ``n_trials`` and ``n_jobs`` like Hydra's own Optuna sweeper and run
every trial as a normal run dir ``<sweep dir>/trial_NNNN`` (NNNN = the Optuna trial number). What they add:

- ``mode: sync``: batches of ``n_jobs`` trials through the configured launcher (as Hydra's sweeper does), but
  resumable: re-running the command continues the study in its storage, the budget counts the old trials and
  trial dirs are never reused.
- ``mode: async``: ``workers`` (default ``n_jobs``) worker jobs through the configured launcher (local processes,
  SLURM jobs), each taking the next trial as soon as its last one ended, a worker that ended early replaced while
  trials wait (:mod:`sesemi.sweep.workers`); trials report every validation and are pruned by
  ``hydra/sweeper/pruner`` (median, successive_halving, hyperband, ...). With ``hydra.launcher.wait=false`` on a
  SLURM launcher it detaches: the workers are submitted as one job array and this process exits; each worker then
  waits for the others' trials instead of ending when none waits, so lost trials are still retried (``_detach``).
- the search space and fixed overrides are checked on the composed config before the study is touched
  (:mod:`sesemi.sweep.space`); each trial's sampler is seeded from the trial's number, so a resumed sweep never
  draws its earlier parameters again (:func:`sesemi.sweep.runner.sampler_for_trial`).
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
import sys
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
    def _settings(self, arguments: list[str], session: str, storage_spec: Any) -> Any:
        from sesemi.sweep import space
        from sesemi.sweep.runner import SweepSettings

        distributions, fixed_params, fixed_overrides = space.parse(self.params, arguments)
        grid = space.grid(self.sampler_cfg, distributions)
        if grid is not None:
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
            poll_interval=self.poll_interval,
            detached=self.detached,
        )

    def sweep(self, arguments: list[str]) -> None:
        """Run the sweep; a configuration error or an aborted sweep is one ``sesemi: error:`` line and exit 2 / 1."""
        from sesemi.errors import ConfigError

        try:
            self._sweep(arguments)
        except ConfigError as err:
            print(f"sesemi: error: {err}", file=sys.stderr, flush=True)
            raise SystemExit(2) from None
        except SweepAborted as err:
            print(f"sesemi: error: the sweep stopped: {err}", file=sys.stderr, flush=True)
            raise SystemExit(1) from None

    def _sweep(self, arguments: list[str]) -> None:
        import optuna

        from sesemi.sweep import space
        from sesemi.sweep import storage as storage_lib
        from sesemi.sweep import study as study_lib
        from sesemi.sweep.runner import build_pruner, sampler_for_trial

        if not self.study_name:
            self.study_name = self.sweep_dir.name
        session = f"{time.strftime('%Y%m%d_%H%M%S')}-{os.getpid()}"
        self.detached = self._detached()
        spec = storage_lib.checked_spec(self.storage)
        settings = self._settings(arguments, session, spec)
        self.task.settings = settings
        self.settings = settings
        direction = space.direction(self.config, self.direction)
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
        # Before the study is touched: a key that does not compose stops here, with nothing run or left waiting.
        space.check(
            self.hydra_context,
            self.config,
            settings.distributions,
            settings.fixed_params,
            settings.fixed_overrides,
            self.enqueue_trials,
        )
        self.dry_run = bool(OmegaConf.select(self.config, "hydra.launcher.dry_run", default=False))
        if self.dry_run:  # the launcher prints its plan and submits nothing: the study stays as it is
            storage: Any = optuna.storages.InMemoryStorage()
        else:
            self.sweep_dir.mkdir(parents=True, exist_ok=True)
            storage = storage_lib.make_storage(spec, self.sweep_dir)
        self.study = study = optuna.create_study(
            study_name=self.study_name,
            storage=storage,
            sampler=sampler_for_trial(settings),
            pruner=build_pruner(settings),
            direction=direction,
            load_if_exists=True,
        )
        if study.direction.name.lower() != direction:
            from sesemi.errors import ConfigError

            raise ConfigError(
                "hydra.sweeper.study_name",
                f"study {self.study_name!r} in {storage_lib.mask(spec)} was created to "
                f"{study.direction.name.lower()}, not {direction}",
                "use another hydra.sweeper.study_name",
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
        }
        commands = study_lib.record_command(
            study,
            {
                "session": session,
                "mode": self.mode,
                "n_trials": self.n_trials,
                "search_space": {k: str(v) for k, v in settings.distributions.items()},
                "fixed": {
                    **{k: str(v) for k, v in settings.fixed_params.items()},
                    **dict(o.split("=", 1) for o in settings.fixed_overrides[:-1] if "=" in o),
                },
            },
            new_study,
        )
        if new_study:
            study.set_user_attr(study_lib.SWEEP, info)
        if not self.dry_run:
            (self.sweep_dir / "sweep.json").write_text(
                json.dumps({**info, "journal": journal is not None, "commands": commands}, indent=2, default=str) + "\n"
            )
        if new_study:
            for params in self.enqueue_trials:
                study.enqueue_trial(dict(params))
        dropped = study_lib.drop_stale_waiting(study, {*settings.distributions, *settings.fixed_params})
        if dropped:
            log.warning("waiting trials %s hold parameters this sweep does not have: dropped, not counted", dropped)
        study_lib.reap_stale(study, self.grace_period, self.max_retries)
        added = study_lib.top_up(study, self.n_trials)
        counted = study_lib.counted(study.get_trials(deepcopy=False))
        log.info(
            "study %s (%s, %s %s): %d of n_trials=%d trials exist%s, %d to run; sweep dir %s",
            self.study_name,
            "dry run, in memory" if self.dry_run else storage_lib.mask(spec),
            direction,
            objective,
            len(counted) - added,
            self.n_trials,
            "" if new_study else " (resumed)",
            sum(1 for t in counted if t.state.name in ("WAITING", "RUNNING")),
            self.sweep_dir,
        )
        if self.detached:
            self._detach()
            return
        if self.mode == "sync":
            self._sweep_sync()
        else:
            self._sweep_async()
        self._check_abort()
        self._finish()

    def _detached(self) -> bool:
        """``hydra.launcher.wait=false``: whether this sweep can run without this process, checked before the study is
        touched (a refusal creates nothing)."""
        from sesemi.errors import ConfigError

        if OmegaConf.select(self.config, "hydra.launcher.wait", default=True) is not False:
            return False
        if self.mode != "async":
            raise ConfigError(
                "hydra.launcher.wait",
                "is false, but the synchronous sweeper samples each batch from the results of the last one, so the "
                "submitting process has to wait for them",
                "use hydra/sweeper=optuna_async (its workers take the trials themselves), or leave "
                "hydra.launcher.wait=true",
            )
        target = str(OmegaConf.select(self.config, "hydra.launcher._target_", default=""))
        if not target.endswith(".SlurmLauncher"):
            raise ConfigError(
                "hydra.launcher.wait",
                f"is false with the launcher {target.rsplit('.', 1)[-1] or 'none'}: a detached asynchronous sweep's "
                "workers are SLURM jobs that outlive this process",
                "use hydra/launcher=slurm or hydra/launcher=slurm_cpu, or leave hydra.launcher.wait=true",
            )
        return True

    def _detach(self) -> None:
        """Submit the workers as one job array and return: each worker takes trials, reaps lost ones and stops when
        none waits or runs (:func:`sesemi.sweep.runner.run_worker`), so the budget needs nobody on this side."""
        from sesemi.sweep import study as study_lib

        slots = min(self.workers, len(study_lib.waiting(self.study)))
        if not slots:
            log.info("nothing to submit: no trial of the budget (n_trials=%d) waits", self.n_trials)
            return
        self.launcher.launch([self._worker_overrides(k) for k in range(slots)], initial_job_idx=0)
        print(f"  the study so far: python -m sesemi.sweep_report {os.path.relpath(self.sweep_dir)}", flush=True)

    # ----------------------------------------------------------------------------------------------------------------
    def _local_processes(self) -> bool:
        """Hydra's basic launcher runs jobs one after the other in this process: parallel jobs become processes."""
        parallel = self.workers if self.mode == "async" else self.n_jobs
        target = str(OmegaConf.select(self.config, "hydra.launcher._target_", default=""))
        return parallel > 1 and target.endswith(".BasicLauncher")

    def _progress(self) -> Any:
        from sesemi.sweep.progress import Progress

        return Progress(self.study, self.objective, self.poll_interval, self.grace_period, self.max_retries)

    def _launch(self, overrides: list[list[str]], initial_job_idx: int, names: list[str]) -> list[str | None]:
        """Launch jobs and wait for them; per job None (it ran) or why not."""
        from sesemi.compat import hydra as hydra_compat

        if self._local_processes():
            from sesemi.sweep.local import LocalProcesses

            runner = LocalProcesses(
                self.hydra_context, self.config, self.task, self.sweep_dir / ".jobs" / self.settings.session
            )
            return runner.launch(overrides, initial_job_idx, names)
        try:
            returns = self.launcher.launch(overrides, initial_job_idx=initial_job_idx)
        except Exception as err:  # noqa: BLE001 - e.g. a SLURM job killed: submitit raises for the whole batch
            log.error("launcher: %s: %s", type(err).__name__, err)
            return [f"lost: {type(err).__name__}: {str(err)[:500]}"] * len(overrides)
        errors: list[str | None] = []
        for ret in returns:
            error = hydra_compat.job_error(ret)
            errors.append(None if error is None else f"{type(error).__name__}: {error}")
        return errors

    def _check_abort(self) -> None:
        from sesemi.sweep import study as study_lib

        reason = study_lib.abort_reason(self.study, self.settings.session) or study_lib.check_failures(
            self.study, self.settings.session, self.n_trials, self.max_failure_rate
        )
        if reason:
            study_lib.set_abort(self.study, self.settings.session, reason)
            self._finish(aborted=reason)

    def _sweep_sync(self) -> None:
        from sesemi.compat import optuna as compat
        from sesemi.sweep import study as study_lib
        from sesemi.sweep.runner import TRIAL_ENV, take_trial, trial_overrides, trial_subdir

        settings, study = self.settings, self.study
        waiter = study_lib.OthersWaiter(study, self.grace_period, self.max_retries, self.poll_interval)
        while True:
            self._check_abort()
            study_lib.reap_stale(study, self.grace_period, self.max_retries)
            batch = []
            while len(batch) < self.n_jobs:
                trial = take_trial(study, settings)
                if trial is None:
                    break
                trial.set_user_attr("session", settings.session)
                try:
                    overrides = trial_overrides(settings, trial, self.config)
                except Exception as err:  # noqa: BLE001 - the search space itself is broken: stop
                    study_lib.fail_trial(
                        study, compat.trial_id(trial), f"search space: {type(err).__name__}: {err}", fatal=True
                    )
                    self._check_abort()
                    continue
                batch.append((trial, [*overrides, f"++hydra.job.env_set.{TRIAL_ENV}={trial.number}"]))
            if not batch:
                if self.dry_run or not waiter():
                    break
                continue
            for trial, _ in batch:
                trial.set_user_attr(study_lib.RUN_DIR, str(self.sweep_dir / trial_subdir(trial.number)))
            # The sweeper beats for its trials while they wait in a queue; the trial jobs beat too once they run.
            beating = [compat.trial_id(t) for t, _ in batch]
            with study_lib.Heartbeat(study, beating, self.heartbeat_interval), self._progress():
                errors = self._launch(
                    [o for _, o in batch], batch[0][0].number, [trial_subdir(t.number) for t, _ in batch]
                )
            for (trial, _), error in zip(batch, errors):
                frozen = compat.frozen(study, compat.trial_id(trial))
                if frozen.state.name != "RUNNING":
                    continue
                if error is None or error.startswith("lost"):
                    study_lib.give_up(
                        study,
                        frozen,
                        error or "lost: the trial job ended without recording a result",
                        self.max_retries,
                    )
                else:
                    study_lib.fail_trial(study, compat.trial_id(trial), error)
                    study_lib.mark_run_dir_failed(frozen.user_attrs.get(study_lib.RUN_DIR), error)

    def _worker_overrides(self, index: int) -> list[str]:
        from sesemi.sweep.runner import WORKER_ENV, worker_subdir

        return [
            *(f"{key}={value}" for key, value in self.settings.fixed_params.items()),
            *self.settings.fixed_overrides,
            f"hydra.sweep.subdir={worker_subdir(self.settings.session, index)}",
            f"++hydra.job.env_set.{WORKER_ENV}={index}",
        ]

    def _sweep_async(self) -> None:
        from sesemi.sweep import study as study_lib
        from sesemi.sweep.runner import worker_subdir
        from sesemi.sweep.workers import WorkerPool

        slots = min(self.workers, len(study_lib.waiting(self.study)))
        if self.dry_run:  # the launcher's plan of the first workers; it ends the command
            self._launch([self._worker_overrides(k) for k in range(max(1, slots))], 0, [])
            return
        log.info("%d worker(s) for %d waiting trial(s)", slots, len(study_lib.waiting(self.study)))
        pool = WorkerPool(
            self.study,
            self.settings.session,
            slots,
            launch=lambda index: self._launch([self._worker_overrides(index)], index, [f"w{index}"])[0],
            worker_dir=lambda index: str(self.sweep_dir / worker_subdir(self.settings.session, index)),
            poll_interval=self.poll_interval,
            grace_period=self.grace_period,
            max_retries=self.max_retries,
        )
        with self._progress():
            pool.run()

    # ----------------------------------------------------------------------------------------------------------------
    def _finish(self, aborted: str | None = None) -> None:
        from sesemi.sweep import study as study_lib

        results = study_lib.write_results(self.study, self.sweep_dir, self.study_name, aborted)
        if "best_trial" in results:
            log.info(
                "best trial %d: %s = %.5g with %s",
                results["best_trial"],
                OmegaConf.select(self.config, "run.objective"),
                results["best_value"],
                results["best_params"],
            )
        log.info("trials: %s; report: python -m sesemi.sweep_report %s", results["trials"], self.sweep_dir)
        if aborted:
            raise SweepAborted(aborted)
