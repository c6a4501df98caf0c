"""Opening a sweep's study: created on the first command, resumed by the same command again.

Before anything is stored, the search space and fixed overrides are checked on the composed config
(:mod:`sesemi.sweep.space`). Then the study is opened in its storage (a dry run: in memory), its direction checked
against the one it was created with and, for a study that holds trials, what a trial of this command trains
checked against what the study's trials trained (:mod:`sesemi.sweep.same_settings`: a study's values must all mean the
same thing); then the command's settings are appended to the study's list (``sweep.json`` shows them), the enqueued
parameter sets added (a new study only), stale waiting trials dropped, lost trials reaped, and the study topped up
with tickets to ``n_trials``. A refused command has changed nothing.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from omegaconf import DictConfig

from sesemi.errors import ConfigError
from sesemi.sweep import same_settings, space
from sesemi.sweep import storage as storage_lib
from sesemi.sweep import study as study_lib
from sesemi.sweep.settings import SweepSettings, build_pruner, sampler_for_trial
from sesemi.sweepdir import SweepDir

log = logging.getLogger("sesemi.sweep")


@dataclass
class SweepOptions:
    """``hydra.sweeper``'s keys, as the sweeper plugin took them."""

    sampler: dict[str, Any] | None
    pruner: dict[str, Any] | None
    direction: Any
    storage: str | None
    study_name: str
    n_trials: int
    mode: str
    max_failure_rate: float
    max_retries: int | None
    heartbeat_interval: float
    grace_period: float
    params: Any
    custom_search_space: str | None
    enqueue_trials: list[Any]
    poll_interval: float
    accept_changed_settings: bool = False
    repeats: int = 1
    repeat_key: str = "run.seed"


@dataclass
class OpenedStudy:
    study: optuna.Study
    settings: SweepSettings
    objective: str  # the metric, or the metrics of a study of several objectives (comma-separated), for lines
    direction: str


def _quote(value: str) -> str:
    """A value for a Hydra override, quoted."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def settings_for(
    options: SweepOptions,
    arguments: list[str],
    sweep_dir: Path,
    session: str,
    detached: bool,
    objectives: list[tuple[str, str]],
    repeat_base: int = 0,
) -> SweepSettings:
    """What every process of the sweep needs, from the plugin's options, the command line's arguments and the
    study's objectives (``(metric, direction)`` each, :func:`sesemi.sweep.space.objectives`)."""
    distributions, fixed_params, fixed_overrides = space.parse(options.params, arguments)
    n_trials = options.n_trials
    grid = space.grid(options.sampler, distributions)
    if grid is not None:
        size = 1
        for values in grid.values():
            size *= len(values)
        if size < n_trials:
            log.info("grid sampler: n_trials %d -> %d (the grid's size)", n_trials, size)
            n_trials = size
    return SweepSettings(
        study_name=options.study_name,
        storage=options.storage,
        sweep_dir=str(sweep_dir),
        session=session,
        n_trials=n_trials,
        max_failure_rate=options.max_failure_rate,
        max_retries=options.max_retries,
        heartbeat_interval=options.heartbeat_interval,
        grace_period=options.grace_period,
        sampler=options.sampler,
        pruner=options.pruner,
        distributions=distributions,
        fixed_params=fixed_params,
        fixed_overrides=[*fixed_overrides, "hydra.sweep.dir=" + _quote(str(sweep_dir))],
        custom_search_space=options.custom_search_space,
        grid_space=grid,
        poll_interval=options.poll_interval,
        detached=detached,
        objectives=objectives,
        repeats=options.repeats,
        repeat_key=options.repeat_key,
        repeat_base=repeat_base,
    )


def new_session() -> str:
    """This sweep command's name among the study's commands (its workers' dirs are named after it)."""
    return f"{time.strftime('%Y%m%d_%H%M%S')}-{os.getpid()}"


def open_study(
    options: SweepOptions, settings: SweepSettings, hydra_context: Any, config: DictConfig, dry_run: bool
) -> OpenedStudy:
    """Check the search space, then open (or create) the study and bring it to the budget."""
    names = [name for name, _ in settings.objectives]
    directions = [d for _, d in settings.objectives]
    direction = "/".join(directions)
    # Before the study is touched: a key that does not compose stops here, with nothing run or left waiting.
    space.check(
        hydra_context,
        config,
        settings.distributions,
        settings.fixed_params,
        settings.fixed_overrides,
        options.enqueue_trials,
    )
    sweep = SweepDir(settings.sweep_dir)
    if dry_run:  # the launcher prints its plan and submits nothing: the study stays as it is
        storage: Any = optuna.storages.InMemoryStorage()
    else:  # the storage first: a journal that cannot be written leaves no sweep dir behind
        storage = storage_lib.make_storage(settings.storage, sweep.path)
        sweep.path.mkdir(parents=True, exist_ok=True)
    if not dry_run and settings.study_name in optuna.get_all_study_names(storage):
        # Loaded, not created again: create_study(load_if_exists=True) appends a record to a journal even when the
        # study exists, and a command refused below must leave the storage as it was.
        study = optuna.load_study(
            study_name=settings.study_name,
            storage=storage,
            sampler=sampler_for_trial(settings),
            pruner=build_pruner(settings),
        )
    else:
        study = optuna.create_study(
            study_name=settings.study_name,
            storage=storage,
            sampler=sampler_for_trial(settings),
            pruner=build_pruner(settings),
            directions=directions,
            load_if_exists=True,
        )
    created = "/".join(d.name.lower() for d in study.directions)
    if created != direction:
        raise ConfigError(
            "hydra.sweeper.study_name",
            f"study {settings.study_name!r} in {storage_lib.mask(settings.storage)} was created to {created}, not "
            f"{direction}",
            "use another hydra.sweeper.study_name",
        )
    new_study = not study.get_trials(deepcopy=False)
    objective = ", ".join(names)
    trains = same_settings.trained_config(hydra_context, config, settings)
    if not new_study:
        same_settings.check_same_objective(study, settings, trains, objective, options.accept_changed_settings, storage)
    elif not study.user_attrs.get(study_lib.COMMANDS):
        with warnings.catch_warnings():  # experimental in some Optuna versions
            warnings.simplefilter("ignore")
            study.set_metric_names(names)  # optuna-dashboard names the values by them, not "Objective 0"
    _record(study, options, settings, sweep, objective, direction, new_study, dry_run, trains)
    if new_study:
        for params in options.enqueue_trials:
            study.enqueue_trial(dict(params))
    dropped = study_lib.drop_stale_waiting(study, {*settings.distributions, *settings.fixed_params})
    if dropped:
        log.warning("waiting trials %s hold parameters this sweep does not have: dropped, not counted", dropped)
    study_lib.reap_stale(study, settings.grace_period, settings.max_retries)
    added = study_lib.top_up(study, settings.n_trials)
    counted = study_lib.counted(study.get_trials(deepcopy=False))
    log.info(
        "study %s (%s, %s %s): %d of n_trials=%d trials exist%s, %d to run; sweep dir %s",
        settings.study_name,
        "dry run, in memory" if dry_run else storage_lib.mask(settings.storage),
        direction,
        objective,
        len(counted) - added,
        settings.n_trials,
        "" if new_study else " (resumed)",
        sum(1 for t in counted if t.state.name in ("WAITING", "RUNNING")),
        sweep.path,
    )
    return OpenedStudy(study, settings, objective, direction)


def _record(
    study: optuna.Study,
    options: SweepOptions,
    settings: SweepSettings,
    sweep: SweepDir,
    objective: str,
    direction: str,
    new_study: bool,
    dry_run: bool,
    trains: dict[str, str],
) -> None:
    """The command's settings in the study (and what its trials train), and ``sweep.json`` (what the report and
    ``sesemi.status`` read)."""
    journal = storage_lib.journal_path(settings.storage, sweep.path)
    info = {
        "study_name": settings.study_name,
        "storage": str(journal) if journal else storage_lib.mask(settings.storage),
        "sweep_dir": str(sweep.path),
        "direction": direction,
        "objective": objective,
    }
    commands = study_lib.record_command(
        study,
        {
            "session": settings.session,
            "mode": options.mode,
            "n_trials": settings.n_trials,
            "search_space": {k: str(v) for k, v in settings.distributions.items()},
            "fixed": same_settings.fixed_settings(settings),
            "trains": same_settings.digest(trains),
        },
        new_study,
    )
    study.set_user_attr(same_settings.TRAINS, trains)
    if new_study:
        study.set_user_attr(study_lib.SWEEP, info)
    if not dry_run:
        sweep.write_sweep({**info, "journal": journal is not None, "commands": commands})
