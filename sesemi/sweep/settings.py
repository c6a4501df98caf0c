"""What every process of a sweep needs to find its study and draw trials: :class:`SweepSettings` (plain, picklable
data the sweeper hands to its trial jobs and workers), the study with its pruner, and each trial's own sampler."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

import optuna

from sesemi.errors import ConfigError
from sesemi.sweep import storage as storage_lib
from sesemi.sweep import study as study_lib


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
    # (metric, direction) per objective: one for most sweeps, several with run.objectives
    objectives: list[tuple[str, str]] = field(default_factory=list)
    repeats: int = 1  # runs (seeds) per trial: repeat_key = repeat_base + k (sesemi.sweep.repeats)
    repeat_key: str = "run.seed"
    repeat_base: int = 0


def _instantiate(node: dict[str, Any]) -> Any:
    from sesemi.compat.hydra import instantiate

    # Like every sesemi config, the sampler/pruner _target_ may be the user's own class.
    return instantiate(node)


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
