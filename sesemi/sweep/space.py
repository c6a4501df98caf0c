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


_DIRECTIONS = {"max": "maximize", "min": "minimize"}


def repeat_base(config: DictConfig, key: str, repeats: int) -> int:
    """The first seed of a trial's repeats: ``key``'s value in the sweep's config (``run.seed``)."""
    from omegaconf import OmegaConf

    value = OmegaConf.select(config, key, default=None)
    if repeats > 1 and not isinstance(value, int):
        raise ConfigError(
            "hydra.sweeper.repeat_key",
            f"{key} is {value!r}, not an integer seed the repeats could count from",
            "set hydra.sweeper.repeat_key to an integer key of the config (run.seed), or hydra.sweeper.repeats=1",
        )
    return int(value) if isinstance(value, int) else 0


def objectives(config: DictConfig, given: Any) -> list[tuple[str, str]]:
    """What the study optimises: ``(metric, direction)`` per objective.

    ``run.objectives`` (a list of ``metric:max|min`` or ``{name: metric, mode: max|min}``) makes a study of several
    objectives; without it, the one ``run.objective`` with the direction ``hydra.sweeper.direction`` gives, or (null)
    the one ``run.objective_mode`` implies.
    """
    from omegaconf import OmegaConf

    listed = OmegaConf.select(config, "run.objectives")
    if listed is None:
        return [(str(OmegaConf.select(config, "run.objective")), direction(config, given))]
    parsed = [
        _objective(entry) for entry in (OmegaConf.to_container(listed) if OmegaConf.is_config(listed) else listed)
    ]
    names = [name for name, _ in parsed]
    if len(parsed) < 2 or len(set(names)) != len(names):
        raise ConfigError(
            "run.objectives",
            f"lists {names}: a study of several objectives needs two or more different metrics",
            'list two or more metrics, e.g. \'run.objectives=["val/acc:max","cost/step_time_s:min"]\', or '
            "set run.objectives=null and run.objective for one",
        )
    if given is not None:
        given = [str(getattr(g, "name", g)).lower() for g in (given if isinstance(given, (list, tuple)) else [given])]
        if given != [d for _, d in parsed]:
            raise ConfigError(
                "hydra.sweeper.direction",
                f"is {given} but run.objectives asks {[d for _, d in parsed]}",
                "leave hydra.sweeper.direction=null: run.objectives gives each objective's direction",
            )
    return parsed


def _objective(entry: Any) -> tuple[str, str]:
    if isinstance(entry, dict):
        name, mode = entry.get("name"), entry.get("mode", "max")
    else:
        name, _, mode = str(entry).rpartition(":") if ":" in str(entry) else (str(entry), "", "max")
    if not name or mode not in _DIRECTIONS:
        raise ConfigError(
            "run.objectives",
            f"{entry!r} is not a metric with a direction",
            "write each as metric:max or metric:min, e.g. val/acc:max",
        )
    return str(name), _DIRECTIONS[mode]


def direction(config: DictConfig, given: Any) -> str:
    """The direction of a study of one objective: ``hydra.sweeper.direction``, or (null) the one
    ``run.objective_mode`` implies."""
    from omegaconf import OmegaConf

    mode = OmegaConf.select(config, "run.objective_mode")
    implied = _DIRECTIONS.get(str(mode)) if mode is not None else None
    if OmegaConf.is_config(given) or isinstance(given, (list, tuple)):
        raise ConfigError(
            "hydra.sweeper.direction",
            "lists several directions",
            "for several objectives give their metrics and directions in run.objectives, and leave "
            "hydra.sweeper.direction=null",
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
