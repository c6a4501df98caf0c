"""A study's values must all mean the same thing: what a trial of a sweep command trains, compared with what the
study's trials trained when the same command comes again (changed settings are refused, or accepted on request)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import optuna
from omegaconf import DictConfig, OmegaConf
from optuna.trial import TrialState

from sesemi.errors import ConfigError
from sesemi.sweep import space
from sesemi.sweep import study as study_lib
from sesemi.sweep.settings import SweepSettings

log = logging.getLogger("sesemi.sweep")

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


def digest(trains: Mapping[str, str]) -> str:
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
        now = {k: json.dumps(str(v)) for k, v in fixed_settings(settings).items()}
    if last.get("trains") == digest(trains):
        return
    null = json.dumps(None)  # a key the other side lacks: a key added (or dropped) with a null value changes nothing
    changed = [
        k
        for k in sorted({*before, *now})
        if before.get(k, null) != now.get(k, null) and not _covered(k, (*swept, *SAME_OBJECTIVE_KEYS))
    ]
    # Trials that trained under the study's settings: waiting tickets have trained nothing yet (a first command that
    # stopped at a configuration error leaves only those, and its failed trial, which is not counted).
    counted = [t for t in study_lib.counted(study.get_trials(deepcopy=False)) if t.state != TrialState.WAITING]
    if not changed or not counted:
        return
    listed = "; ".join(f"{k}: {_shown(before.get(k))} -> {_shown(now.get(k))}" for k in changed[:6])
    if len(changed) > 6:
        listed += f"; and {len(changed) - 6} more"
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


def fixed_settings(settings: SweepSettings) -> dict[str, Any]:
    """The command line's fixed settings, as the study's record of each command holds them."""
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
