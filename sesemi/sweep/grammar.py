"""The search-space grammar of a sweep (``interval(..)``, ``tag(log, interval(..))``, ``choice(..)``, ``range(..)``)
turned into Optuna distributions, exactly as Hydra's own Optuna sweeper (hydra-optuna-sweeper 1.4) turns it.

A search space must mean the same under ``hydra/sweeper=optuna`` and sesemi's sweepers, but the plugin has no public
API, and its releases for the Hydra 1.3 line pin ``optuna<3``; so sesemi reads the grammar itself, on Hydra's
override parser (the one every sweeper plugin uses), on both Hydra lines. ``tests/sweep/test_grammar.py`` compares
every form with the plugin where it is installed.

- ``interval(a, b)``: ``FloatDistribution(a, b)``, an ``IntDistribution`` when both ends are ints;
  ``tag(log, interval(a, b))``: the same with ``log=True``;
- ``choice(x, y)`` and ``x,y``: a ``CategoricalDistribution`` of the values (a non-scalar as its override text);
- ``range(start, stop, step)`` (stop exclusive): ``IntDistribution(first, last, step)`` for ints,
  ``FloatDistribution(first, last, step=step)`` for floats whose steps are exact as floats (else a categorical of
  the values); ``shuffle(range(..))`` and Hydra 1.4's ``int(range(..))``: a categorical of the values;
- anything else: a fixed parameter (its text); ``~key``: passed on as an override.
"""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction
from math import ceil, ulp
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep, Transformer
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

_SCALARS = (str, int, float, bool, type(None))


def search_space(arguments: list[str]) -> tuple[dict[str, BaseDistribution], dict[str, Any], list[str]]:
    """Sweep overrides -> (distributions, fixed parameters, other overrides), as ``hydra/sweeper=optuna`` reads
    them (its ``create_params_from_overrides``)."""
    distributions: dict[str, BaseDistribution] = {}
    fixed: dict[str, Any] = {}
    other: list[str] = []
    for override in OverridesParser.create().parse_overrides(arguments):
        if override.is_delete():
            other.append(str(override.input_line))
            continue
        value = distribution(override)
        if isinstance(value, BaseDistribution):
            distributions[override.get_key_element()] = value
        else:
            fixed[override.get_key_element()] = value
    return distributions, fixed, other


def distribution(override: Override) -> BaseDistribution | str:
    """One override's distribution; a non-sweep override's value as text."""
    if not override.is_sweep_override():
        return override.get_value_element_as_str()
    value = override.value()
    if isinstance(value, ChoiceSweep):
        return _categorical(override)
    if isinstance(value, RangeSweep):
        return _range(override, value)
    if isinstance(value, IntervalSweep):
        return _interval(value)
    raise ValueError(f"{override.input_line}: not a sweep Optuna can sample (choice, range or interval)")


def grid_choices(dist: BaseDistribution) -> list[Any]:
    """The points of a discrete distribution, as Hydra's Optuna sweeper hands them to ``GridSampler``."""
    if isinstance(dist, CategoricalDistribution):
        return list(dist.choices)
    if isinstance(dist, IntDistribution):
        return list(range(dist.low, dist.high + 1, dist.step))
    if isinstance(dist, FloatDistribution) and dist.step is not None:
        points = _float_steps(Decimal(str(dist.low)), Decimal(str(dist.high)), Decimal(str(dist.step)))
        if not points or points[-1] != dist.high:
            points.append(dist.high)
        return points
    raise ValueError("the grid sampler takes only discrete distributions: choice(..), range(..) or an int interval")


def _categorical(override: Override) -> CategoricalDistribution:
    # Transformer.encode: a scalar as it is, anything else (a list, a quoted string, null) as its override text.
    return CategoricalDistribution(_checked(override, list(override.sweep_iterator(transformer=Transformer.encode))))


def _checked(override: Override, choices: list[Any]) -> list[Any]:
    for choice in choices:
        if not isinstance(choice, _SCALARS):
            raise ValueError(f"{override.input_line}: a choice must be a str, int, float, bool or null, not {choice!r}")
    return choices


def _range(override: Override, value: RangeSweep) -> BaseDistribution:
    assert value.start is not None and value.stop is not None
    if value.step == 0:
        raise ValueError("An Optuna range sweep requires a nonzero step.")
    # shuffle(range(..)) and, on Hydra 1.4, int(range(..))/float(range(..)) (cast values: `transformers`, which 1.3
    # lacks; its casts change start, stop and step instead).
    if value.shuffle or getattr(value, "transformers", ()):
        return _categorical(override)
    if all(isinstance(v, int) for v in (value.start, value.stop, value.step)):
        values = range(int(value.start), int(value.stop), int(value.step))
        if not values:
            raise ValueError("An Optuna range sweep must contain at least one value.")
        low, high = sorted((values[0], values[-1]))
        return IntDistribution(low, high, step=abs(values.step))
    # Decimal(str(x)), as Hydra 1.4's float ranges count (1.3's Decimal(x) would take a float's binary expansion).
    start, stop, step = (Decimal(str(v)) for v in (value.start, value.stop, value.step))
    count = ceil((Fraction(stop) - Fraction(start)) / Fraction(step))
    if count <= 0:
        raise ValueError("An Optuna range sweep must contain at least one value.")
    last = start + (count - 1) * step  # Optuna includes both ends; Hydra's stop is exclusive
    low, high = sorted((float(start), float(last)))
    float_step = float(abs(step))
    exact = (
        Decimal(str(low)) == min(start, last)
        and Decimal(str(high)) == max(start, last)
        and Decimal(str(float_step)) == abs(step)
        and not (float_step < max(ulp(low), ulp(high)) and low != high)
    )
    if not exact:  # Optuna's float steps would not land on the range's values
        return CategoricalDistribution(_float_steps(start, stop, step))
    return FloatDistribution(low, high, step=float_step)


def _interval(value: IntervalSweep) -> BaseDistribution:
    assert value.start is not None and value.end is not None
    log = "log" in value.tags
    if isinstance(value.start, int) and isinstance(value.end, int):
        return IntDistribution(int(value.start), int(value.end), log=log)
    return FloatDistribution(value.start, value.end, log=log)


def _float_steps(start: Decimal, stop: Decimal, step: Decimal) -> list[float]:
    """``start, start + step, ..`` short of ``stop`` (exclusive), as floats: Hydra 1.4's ``FloatRange``."""
    points: list[float] = []
    current = start
    while (current < stop) if step > 0 else (current > stop):
        points.append(float(current))
        current = start + step * len(points)
    return points
