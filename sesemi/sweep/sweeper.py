"""``hydra/sweeper=optuna_sync`` and ``hydra/sweeper=optuna_async``: sesemi's Optuna sweeper (a Hydra plugin).

Both read the search space, sampler, storage, ``n_trials`` and ``n_jobs`` like Hydra's own Optuna sweeper and run
every trial as a normal run dir ``<sweep dir>/trial_NNNN`` (NNNN = the Optuna trial number). The plugin takes the
keys and picks the parts:

- :mod:`sesemi.sweep.opening`: the search space checked, the study opened or resumed and brought to the budget;
- :mod:`sesemi.sweep.sync`: batches of ``n_jobs`` trials through the launcher (``mode: sync``);
- :mod:`sesemi.sweep.asynchronous`: ``workers`` worker jobs taking trials as they go, or detached on SLURM
  (``mode: async``);
- :mod:`sesemi.sweep.launching`: the launcher, asked what it can do (:mod:`sesemi.cluster.capabilities`), and local
  processes where it runs jobs one by one in this process;
- :mod:`sesemi.sweep.task`: what runs in a job (a trial, a worker).

Failure tolerance: a crashing trial is recorded FAIL with its error and the sweep goes on until more than
``max_failure_rate * n_trials`` trials of this run failed; a configuration error that every trial would hit
(``run.objective`` not logged, a bad path) stops the sweep at the first trial. A trial whose process died (killed,
preempted) is failed and retried with the same parameters, up to ``max_retries`` times.

Only Hydra imports at module level: Hydra imports every plugin at start-up, for single runs too.
"""

from __future__ import annotations

import inspect
import logging
import os
from pathlib import Path
from typing import Any

from hydra.plugins.sweeper import Sweeper
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("sesemi.sweep")


class SweepAborted(RuntimeError):
    """The sweep stopped early: too many failed trials, or a configuration error every trial would hit."""


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
        accept_changed_settings: bool = False,
        repeats: int = 1,
        repeat_key: str = "run.seed",
        budget: Any = None,
        baseline: Any = None,
    ) -> None:
        if mode not in ("sync", "async"):
            raise ValueError(f"hydra.sweeper.mode must be sync or async, got {mode!r}")
        if not 0.0 <= float(max_failure_rate) <= 1.0:
            raise ValueError("hydra.sweeper.max_failure_rate must be between 0 and 1")
        from sesemi.sweep.opening import SweepOptions

        self.options = SweepOptions(
            sampler=_container(sampler),
            pruner=_container(pruner),
            direction=direction,
            storage=_container(storage),
            study_name=study_name or "",
            n_trials=int(n_trials),
            mode=mode,
            max_failure_rate=float(max_failure_rate),
            max_retries=None if max_retries is None else int(max_retries),
            heartbeat_interval=float(heartbeat_interval),
            grace_period=float(grace_period) if grace_period is not None else 4 * float(heartbeat_interval),
            params=params,
            custom_search_space=custom_search_space,
            enqueue_trials=_container(enqueue_trials) or [],
            poll_interval=float(poll_interval),
            accept_changed_settings=bool(accept_changed_settings),
            repeats=max(1, int(repeats)),
            repeat_key=str(repeat_key),
        )
        self.n_jobs = max(1, int(n_jobs))
        self.workers = max(1, int(workers if workers is not None else n_jobs))
        self.dir = dir
        self.budget, self.baseline = budget, _container(baseline)  # see sesemi.sweep.budget

    def setup(self, *, hydra_context: Any, task_function: Any, config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

        from sesemi.cluster.capabilities import expect_results
        from sesemi.errors import ConfigError, exit_with
        from sesemi.sweep.launching import SweepLaunch
        from sesemi.sweep.task import SweepTask

        if "callbacks" not in inspect.signature(task_function).parameters:
            exit_with(
                ConfigError(
                    "hydra/sweeper",
                    f"sesemi's Optuna sweeper runs sesemi's training app, and {task_function.__qualname__} is not it "
                    "(it takes no callbacks)",
                    "use it with python -m sesemi.train",
                )
            )
        self.config = config
        self.hydra_context = hydra_context
        self.sweep_dir = self._set_sweep_dir(config)
        self.task = SweepTask(task_function, hydra_context, config)
        launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=hydra_context, task_function=self.task
        )
        # A synchronous sweep samples each batch from the last one's results; asynchronous workers tell the study.
        expect_results(launcher, self.options.mode == "sync")
        # A synchronous batch runs each trial's seed repeats as jobs of their own, side by side.
        parallel = self.workers if self.options.mode == "async" else self.n_jobs * self.options.repeats
        self.launch = SweepLaunch(launcher, hydra_context, config, self.task, parallel)

    def _set_sweep_dir(self, config: DictConfig) -> Path:
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
        return Path(str(config.hydra.sweep.dir)).absolute()

    def sweep(self, arguments: list[str]) -> None:
        """Run the sweep; a configuration error or an aborted sweep is one ``sesemi: error:`` line and exit 2 / 1."""
        from sesemi.errors import ConfigError, exit_with

        try:
            self._sweep(arguments)
        except ConfigError as err:
            exit_with(err)
        except SweepAborted as err:
            exit_with(f"the sweep stopped: {err}", code=1)

    def _sweep(self, arguments: list[str]) -> None:
        from sesemi.sweep import asynchronous, budget, space, sync
        from sesemi.sweep import storage as storage_lib
        from sesemi.sweep.opening import new_session, open_study, settings_for

        options = self.options
        options.study_name = options.study_name or self.sweep_dir.name
        options.storage = storage_lib.checked_spec(options.storage)
        detached = self._detached()
        objectives = space.objectives(self.config, options.direction)
        arguments = budget.prepare(
            arguments,
            budget=self.budget,
            baseline=self.baseline,
            params=options.params,
            hydra_context=self.hydra_context,
            config=self.config,
        )
        base = space.repeat_base(self.config, options.repeat_key, options.repeats)
        settings = settings_for(options, arguments, self.sweep_dir, new_session(), detached, objectives, base)
        self.task.settings = settings
        if options.mode == "async":
            self._check_one_process_per_trial()
        dry_run = bool(OmegaConf.select(self.config, "hydra.launcher.dry_run", default=False))
        opened = open_study(options, settings, self.hydra_context, self.config, dry_run)
        self.study, self.settings = opened.study, settings
        if not dry_run:
            budget.launch_baseline(opened.study, settings, self.launch, self.baseline)
        if detached:
            asynchronous.detach(opened.study, settings, self.launch, workers=self.workers, budget=settings.n_trials)
            return
        if options.mode == "sync":
            sync.run(
                opened.study,
                settings,
                self.launch,
                self.config,
                n_jobs=self.n_jobs,
                objective=opened.objective,
                dry_run=dry_run,
                check_abort=self._check_abort,
            )
        else:
            asynchronous.run(
                opened.study, settings, self.launch, workers=self.workers, objective=opened.objective, dry_run=dry_run
            )
        self._check_abort()
        self._finish()

    def _detached(self) -> bool:
        """``hydra.launcher.wait=false``: whether this sweep can run without this process, checked before the study is
        touched (a refusal creates nothing)."""
        from sesemi.cluster.capabilities import capabilities_of
        from sesemi.errors import ConfigError

        capabilities = capabilities_of(self.launch.launcher)
        if not capabilities.detached:
            return False
        if self.options.mode != "async":
            raise ConfigError(
                "hydra.launcher.wait",
                "is false, but the synchronous sweeper samples each batch from the results of the last one, so the "
                "submitting process has to wait for them",
                "use hydra/sweeper=optuna_async (its workers take the trials themselves), or leave "
                "hydra.launcher.wait=true",
            )
        if not capabilities.slurm:
            raise ConfigError(
                "hydra.launcher.wait",
                "is false with a launcher whose jobs end with this process: a detached asynchronous sweep's "
                "workers are SLURM jobs that outlive it",
                "use hydra/launcher=slurm or hydra/launcher=slurm_cpu, or leave hydra.launcher.wait=true",
            )
        return True

    def _check_one_process_per_trial(self) -> None:
        from sesemi.errors import ConfigError

        devices, nodes = OmegaConf.select(self.config, "run.devices"), OmegaConf.select(self.config, "run.num_nodes")
        if devices not in (None, 1) or nodes not in (None, 1):
            raise ConfigError(
                "run.devices",
                f"is {devices} (num_nodes {nodes}): asynchronous workers run one process per trial",
                "use run.devices=1 with hydra/sweeper=optuna_async, or hydra/sweeper=optuna_sync for "
                "multi-device trials",
            )

    def _check_abort(self) -> None:
        from sesemi.sweep import study as study_lib

        session = self.settings.session
        reason = study_lib.abort_reason(self.study, session) or study_lib.check_failures(
            self.study, session, self.settings.n_trials, self.options.max_failure_rate
        )
        if reason:
            study_lib.set_abort(self.study, session, reason)
            self._finish(aborted=reason)

    def _finish(self, aborted: str | None = None) -> None:
        from sesemi.sweep import study as study_lib

        results = study_lib.write_results(self.study, self.sweep_dir, self.settings.study_name, aborted)
        if "best_trial" in results:
            log.info(
                "best trial %d: %s = %.5g with %s",
                results["best_trial"],
                OmegaConf.select(self.config, "run.objective"),
                results["best_value"],
                results["best_params"],
            )
        if "pareto_front" in results:
            names = ", ".join(name for name, _ in self.settings.objectives)
            log.info("Pareto front of %s: trials %s", names, [t["trial"] for t in results["pareto_front"]])
        log.info("trials: %s; report: python -m sesemi.sweep_report %s", results["trials"], self.sweep_dir)
        if aborted:
            raise SweepAborted(aborted)
