"""The sweep's search space: parsed as Hydra's Optuna sweeper parses it, and checked before the first trial.

Every swept key, every fixed override and every enqueued parameter set is applied to the composed config once,
before the study is touched: a key that does not exist (``optimizer.lrr``) or a value its key cannot take is one
``sesemi: error:`` line, with no trial run, counted or left waiting to replay it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig
from optuna.distributions import BaseDistribution, CategoricalDistribution

from sesemi.errors import ConfigError
from sesemi.sweep import grammar


def parse(
    params: Mapping[str, Any] | None, arguments: list[str]
) -> tuple[dict[str, BaseDistribution], dict[str, Any], list[str]]:
    """``hydra.sweeper.params`` and the command line's overrides -> (distributions, fixed parameters, other
    overrides); a key given both ways is fixed."""
    overrides = [f"{k!s}={v}" for k, v in (params or {}).items()] + list(arguments)
    distributions, fixed_params, fixed_overrides = grammar.search_space(overrides)
    for name in fixed_params:
        distributions.pop(name, None)
    return distributions, fixed_params, fixed_overrides


def grid(sampler: Mapping[str, Any] | None, distributions: dict[str, BaseDistribution]) -> dict[str, list] | None:
    """The grid of a ``GridSampler`` sweep (None for other samplers)."""
    if not str((sampler or {}).get("_target_", "")).endswith("GridSampler"):
        return None
    return {name: grammar.grid_choices(dist) for name, dist in distributions.items()}


def representative(dist: BaseDistribution) -> Any:
    """A value the distribution can draw, to try its key on the config."""
    if isinstance(dist, CategoricalDistribution):
        return dist.choices[0]
    return dist.low  # FloatDistribution, IntDistribution


def _key_of(err: BaseException, keys: list[str]) -> str | None:
    text = str(err)
    match = re.search(r"override '([^']+)'", text) or re.search(r"[Kk]ey '([^']+)'", text)
    if match:
        named = match.group(1).lstrip("+~")
        whole = [k for k in keys if k.lstrip("+~") == named or k.lstrip("+~").endswith("." + named)]
        return whole[0] if whole else named
    return next((k for k in keys if k.lstrip("+~") in text), None)


def check(
    hydra_context: Any,
    config: DictConfig,
    distributions: Mapping[str, BaseDistribution],
    fixed_params: Mapping[str, Any],
    fixed_overrides: list[str],
    enqueued: list[Mapping[str, Any]] = (),
) -> None:
    """Compose a trial's config as a trial job would, with a value of every swept key (and each enqueued parameter
    set); raises :class:`ConfigError` naming the key that does not compose."""
    sets = [{name: representative(d) for name, d in distributions.items()}]
    sets += [{**sets[0], **dict(e)} for e in enqueued]
    for values in sets:
        overrides = [f"{k}={v}" for k, v in {**values, **fixed_params}.items()] + list(fixed_overrides)
        try:
            hydra_context.config_loader.load_sweep_config(config, overrides)
        except Exception as err:
            keys = [*values, *fixed_params, *(o.split("=", 1)[0] for o in fixed_overrides)]
            key = _key_of(err, keys) or "hydra.sweeper.params"
            swept = key in distributions
            problem = " ".join(str(err).split())
            if problem.startswith("Could not override"):
                problem = "is not a key of the composed config"
            elif len(problem) > 300:
                problem = problem[:297] + "..."
            raise ConfigError(
                key,
                f"({'swept' if swept else 'fixed'} by this sweep) {problem}",
                "correct the key in the search space (hydra.sweeper.params of the hparams_search config, or the "
                "command line); a key the config lacks needs a leading + (+key=...)",
            ) from err


def direction(config: DictConfig, given: Any) -> str:
    """The study's direction: ``hydra.sweeper.direction``, or (null) the one ``run.objective_mode`` implies."""
    from omegaconf import OmegaConf

    mode = OmegaConf.select(config, "run.objective_mode")
    implied = {"max": "maximize", "min": "minimize"}.get(str(mode)) if mode is not None else None
    if OmegaConf.is_config(given) or isinstance(given, (list, tuple)):
        raise ConfigError(
            "hydra.sweeper.direction",
            "lists several directions",
            "sesemi sweeps optimise one objective (run.objective): give one direction",
        )
    if hasattr(given, "name"):
        given = given.name
    if given is None:
        return implied or "maximize"
    given = str(given)
    if implied and given != implied:
        raise ConfigError(
            "hydra.sweeper.direction",
            f"is {given} but run.objective_mode={mode} ({OmegaConf.select(config, 'run.objective')})",
            f"set hydra.sweeper.direction={implied}, or leave it null to follow run.objective_mode",
        )
    return given
