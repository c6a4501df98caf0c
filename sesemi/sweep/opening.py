"""Opening a sweep's study: created on the first command, resumed by the same command again.

Before anything is stored, the search space and fixed overrides are checked on the composed config
(:mod:`sesemi.sweep.space`). Then the study is opened in its storage (a dry run: in memory), its direction checked
against the one it was created with and, for a study that holds trials, what a trial of this command trains
checked against what the study's trials trained (:func:`check_same_objective`: a study's values must all mean the
same thing); then the command's settings are appended to the study's list (``sweep.json`` shows them), the enqueued
parameter sets added (a new study only), stale waiting trials dropped, lost trials reaped, and the study topped up
with tickets to ``n_trials``. A refused command has changed nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from omegaconf import DictConfig, OmegaConf

from sesemi.errors import ConfigError
from sesemi.sweep import space
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


# What a trial trains and how it is scored is its composed config, except the keys below: they change where it runs
# and what it shows, never the objective's meaning, so a resumed study takes a command that changes only these (a key
# covers everything below it). Everything else (trainer.max_steps, data, method, model, optimizer, augment,
# run.seed, run.devices, run.objective...) must be what the study's trials trained.
SAME_OBJECTIVE_KEYS = (
    "run.id",
    "run.dir",
    "run.output_dir",
    "run.resume",
    "run.data_root",
    "run.src_dir",
    "run.accelerator",
    "run.strategy",
    "run.channels_last",
    "trainer.log_every_n_steps",
    "callbacks.progress_bar",
    "callbacks.lr_monitor",
    "callbacks.images",
    "callbacks.heartbeat",
    "callbacks.cost",
    "callbacks.checkpoint.every_n_train_steps",
    "callbacks.last_checkpoint.every_n_train_steps",
    "logger",
    "data.num_workers",
    "data.persistent_workers",
    "data.pin_memory",
    "data.eval_batch_size",
)
# Study user attribute: what the latest command's trials train (the flat config of check_same_objective).
TRAINS = "sesemi:trains"
ACCEPT_KEY = "hydra.sweeper.accept_changed_settings"


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
    trains = trained_config(hydra_context, config, settings)
    if not new_study:
        check_same_objective(study, settings, trains, objective, options.accept_changed_settings, storage)
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
            "fixed": _fixed(settings),
            "trains": _digest(trains),
        },
        new_study,
    )
    study.set_user_attr(TRAINS, trains)
    if new_study:
        study.set_user_attr(study_lib.SWEEP, info)
    if not dry_run:
        sweep.write_sweep({**info, "journal": journal is not None, "commands": commands})


def trained_config(hydra_context: Any, config: DictConfig, settings: SweepSettings) -> dict[str, str]:
    """What a trial of this command trains and how it is scored: its config, composed as a trial's is (the swept keys
    at a value they can take, every fixed parameter and override), flat (``trainer.max_steps``), each value as the
    config writes it (interpolations unresolved), without the swept keys and without :data:`SAME_OBJECTIVE_KEYS`."""
    values = {name: space.representative(d) for name, d in settings.distributions.items()}
    overrides = [f"{k}={v}" for k, v in {**values, **settings.fixed_params}.items()] + list(settings.fixed_overrides)
    composed = hydra_context.config_loader.load_sweep_config(config, overrides)
    job = OmegaConf.to_container(composed, resolve=False)
    job.pop("hydra", None)
    return {k: v for k, v in _flat(job).items() if not _covered(k, (*settings.distributions, *SAME_OBJECTIVE_KEYS))}


def _flat(node: Any, prefix: str = "") -> dict[str, str]:
    if isinstance(node, Mapping) and node:
        out: dict[str, str] = {}
        for key, value in node.items():
            out.update(_flat(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: json.dumps(node, sort_keys=True, default=str)}


def _covered(key: str, prefixes: Iterable[str]) -> bool:
    """``key`` is one of ``prefixes`` or below one (``callbacks.images.every_n_steps`` below ``callbacks.images``)."""
    return any(key == p or key.startswith(p + ".") for p in (q.lstrip("+~") for q in prefixes))


def _digest(trains: Mapping[str, str]) -> str:
    return hashlib.sha256(json.dumps(dict(trains), sort_keys=True).encode()).hexdigest()[:16]


def check_same_objective(
    study: optuna.Study,
    settings: SweepSettings,
    trains: dict[str, str],
    objective: str,
    accept: bool,
    storage: Any,
) -> None:
    """Refuse (a :class:`ConfigError`, before the study or the sweep dir changes) a command whose trials would train
    something else than the study's trials did: another ``trainer.max_steps``, data, method, model, optimizer
    setting... Their values would be another objective, counted in the same budget and learnt from by the same
    sampler. A key swept by this command or the previous one is the search space's, and may change; so may the keys
    of :data:`SAME_OBJECTIVE_KEYS`. ``hydra.sweeper.accept_changed_settings=true`` takes the command anyway (a
    warning lists the changes).

    Compared with the study's latest command (a study written before this check: with its command-line settings)."""
    commands = study.user_attrs.get(study_lib.COMMANDS) or []
    if not commands:
        return
    last = commands[-1]
    swept = (*settings.distributions, *last.get("search_space", {}))
    before = study.user_attrs.get(TRAINS)
    now = trains
    if before is None:  # a study of an earlier sesemi: compare the command lines' fixed settings
        before = {k: json.dumps(v) for k, v in last.get("fixed", {}).items()}
        now = {k: json.dumps(str(v)) for k, v in _fixed(settings).items()}
    if last.get("trains") == _digest(trains):
        return
    null = json.dumps(None)  # a key the other side lacks: a key added (or dropped) with a null value changes nothing
    changed = [
        k
        for k in sorted({*before, *now})
        if before.get(k, null) != now.get(k, null) and not _covered(k, (*swept, *SAME_OBJECTIVE_KEYS))
    ]
    if not changed:
        return
    listed = "; ".join(f"{k}: {_shown(before.get(k))} -> {_shown(now.get(k))}" for k in changed[:6])
    if len(changed) > 6:
        listed += f"; and {len(changed) - 6} more"
    counted = study_lib.counted(study.get_trials(deepcopy=False))
    if accept:
        log.warning(
            "%s=true: this command's trials train other settings than the study's %s (%s); all are kept in "
            "one study, counted in one budget, and the sampler learns from all of them",
            ACCEPT_KEY,
            _trials(len(counted)),
            listed,
        )
        return
    raise ConfigError(
        changed[0],
        f"study {settings.study_name!r} holds {_trials(len(counted))} that trained other settings than this "
        f"command's ({listed}): their {objective} measures something else than this command's trials would, yet "
        f"they would share the budget and the sampler; nothing was changed",
        f"a study of its own for these settings: hydra.sweeper.study_name={_free_name(settings, storage)} (its own "
        f"sweep dir); or, to add them to this study anyway, {ACCEPT_KEY}=true",
    )


def _trials(n: int) -> str:
    return f"{n} trial" if n == 1 else f"{n} trials"


def _fixed(settings: SweepSettings) -> dict[str, Any]:
    """The command line's fixed settings, as :func:`_record` stores them."""
    return {
        **{k: str(v) for k, v in settings.fixed_params.items()},
        **dict(o.split("=", 1) for o in settings.fixed_overrides[:-1] if "=" in o),
    }


def _shown(value: str | None) -> str:
    """A flat config value as a user would write it (``600``, ``fixmatch``), ``-`` where the key is missing."""
    if value is None:
        return "-"
    try:
        decoded = json.loads(value)
    except ValueError:
        return value
    text = decoded if isinstance(decoded, str) else json.dumps(decoded)
    return text if len(text) <= 60 else text[:57] + "..."


def _free_name(settings: SweepSettings, storage: Any) -> str:
    """A study name for the new settings that neither the storage nor a sweep dir beside this one holds."""
    taken = set(optuna.get_all_study_names(storage))
    sweep_dir = Path(settings.sweep_dir)
    beside = sweep_dir.name == settings.study_name  # the built-in searches: dir: ${run.dir}/sweeps/${.study_name}
    for n in range(2, 1000):
        name = f"{settings.study_name}_{n}"
        if name not in taken and not (beside and (sweep_dir.parent / name).exists()):
            return name
    return f"{settings.study_name}_{os.getpid()}"
