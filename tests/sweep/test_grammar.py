"""sesemi.sweep.grammar reads every form of the search-space grammar as Hydra's own Optuna sweeper does: the same
distributions (type, bounds, step, log, and the type of every choice) and the same grid points; compared with the
plugin itself where it is installed (the ``hydra-optuna`` extra, Hydra 1.4 line), and with the expected values on
both Hydra lines."""

from __future__ import annotations

import importlib.util
from typing import Any

import pytest
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from sesemi.compat import hydra as hydra_compat
from sesemi.sweep import grammar

PLUGIN = importlib.util.find_spec("hydra_plugins.hydra_optuna_sweeper") is not None
needs_plugin = pytest.mark.skipif(not PLUGIN, reason="hydra-optuna-sweeper is not installed (the hydra-optuna extra)")


def Cat(*choices: Any) -> CategoricalDistribution:  # reads like the distributions beside it
    return CategoricalDistribution(choices)


# (sweep override value, its distribution) on both Hydra lines
FORMS = [
    ("interval(0.1, 0.9)", FloatDistribution(0.1, 0.9)),
    ("interval(1, 10)", FloatDistribution(1.0, 10.0)),  # Hydra's interval() takes floats ...
    ("int(interval(1, 10))", IntDistribution(1, 10)),  # ... an int interval is cast
    ("int(interval(1.5, 9.5))", IntDistribution(1, 9)),
    ("tag(log, interval(0.001, 0.1))", FloatDistribution(0.001, 0.1, log=True)),
    ("tag(log, int(interval(1, 1024)))", IntDistribution(1, 1024, log=True)),
    ("choice(0.5, 1.0, 2.0)", Cat(0.5, 1.0, 2.0)),
    ("choice(1, 2.0, abc, true)", Cat(1, 2.0, "abc", True)),
    ("a,b,c", Cat("a", "b", "c")),
    ("choice([1,2], [3])", Cat("[1,2]", "[3]")),
    ("choice('a b', c)", Cat("a b", "c")),
    ("tag(log, choice(1, 10, 100))", Cat(1, 10, 100)),
    ("range(16, 65, 16)", IntDistribution(16, 64, step=16)),
    ("range(5)", IntDistribution(0, 4)),
    ("range(10, 0, -3)", IntDistribution(1, 10, step=3)),
    ("range(0.1, 0.5, 0.1)", FloatDistribution(0.1, 0.4, step=0.1)),
    ("range(0, 1, 0.25)", FloatDistribution(0.0, 0.75, step=0.25)),
    ("range(1, 2.5, 0.5)", FloatDistribution(1.0, 2.0, step=0.5)),
    ("range(1.0, 0.0, -0.3)", FloatDistribution(0.1, 1.0, step=0.3)),
    # steps that are not exact at this magnitude: Optuna's grid would miss the values, so their list is the choice
    ("range(1e16, 10000000000000004.0, 1.5)", Cat(1e16, 1.0000000000000002e16, 1.0000000000000004e16)),
]


def _key(dist: BaseDistribution) -> tuple:
    """Everything that makes a distribution what it is, the type of each choice and bound included (1 == 1.0 ==
    True, but a sampler draws them differently)."""
    if isinstance(dist, CategoricalDistribution):
        return ("categorical", tuple((type(c), c) for c in dist.choices))
    return (type(dist).__name__, type(dist.low), dist.low, type(dist.high), dist.high, dist.step, dist.log)


def _one(value: str) -> BaseDistribution:
    distributions, fixed, other = grammar.search_space([f"x={value}"])
    assert not fixed and not other
    return distributions["x"]


@pytest.mark.parametrize(("value", "expected"), FORMS, ids=[v for v, _ in FORMS])
def test_each_form_gives_its_distribution(value: str, expected: BaseDistribution):
    assert _key(_one(value)) == _key(expected)


@needs_plugin
@pytest.mark.parametrize("value", [v for v, _ in FORMS] + ["int(range(1, 5))", "float(range(1, 3))"])
def test_each_form_gives_what_hydras_optuna_sweeper_gives(value: str):
    ours = grammar.search_space([f"x={value}", "fixed=3", "+added=y", "~gone"])
    theirs = hydra_compat.search_space([f"x={value}", "fixed=3", "+added=y", "~gone"])
    assert _key(ours[0]["x"]) == _key(theirs[0]["x"])
    assert ours[1:] == theirs[1:] == ({"fixed": "3", "+added": "y"}, ["~gone"])
    if not isinstance(ours[0]["x"], FloatDistribution) or ours[0]["x"].step is not None:  # discrete: a grid
        assert grammar.grid_choices(ours[0]["x"]) == hydra_compat.grid_choices(theirs[0]["x"])


def test_fixed_values_and_deletions_pass_through():
    distributions, fixed, other = grammar.search_space(["a=interval(0, 1)", "b=3", "+c=text", "~d", "e=[1,2]"])
    assert list(distributions) == ["a"]
    assert fixed == {"b": "3", "+c": "text", "e": "[1,2]"} and other == ["~d"]


def test_casting_a_range_follows_the_hydra_line():
    """``int(range(..))``: Hydra 1.4 casts each value (the sweeper sees a list: a categorical); Hydra 1.3 casts the
    range's start, stop and step (an int range)."""
    expected = IntDistribution(1, 4) if hydra_compat.HYDRA_LINE < (1, 4) else Cat(1, 2, 3, 4)
    assert _key(_one("int(range(1, 5))")) == _key(expected)


def test_a_shuffled_range_is_a_categorical_of_its_values():
    dist = _one("shuffle(range(1, 4))")
    assert isinstance(dist, CategoricalDistribution) and sorted(dist.choices) == [1, 2, 3]


@pytest.mark.parametrize(
    ("dist", "points"),
    [
        (IntDistribution(16, 64, step=16), [16, 32, 48, 64]),
        (FloatDistribution(0.1, 0.4, step=0.1), [0.1, 0.2, 0.3, 0.4]),
        (FloatDistribution(0.0, 0.9, step=0.3), [0.0, 0.3, 0.6, 0.9]),  # the high end is always a point
        (Cat("a", 1), ["a", 1]),
    ],
)
def test_grid_points(dist: BaseDistribution, points: list):
    assert grammar.grid_choices(dist) == points
    if PLUGIN:
        assert hydra_compat.grid_choices(dist) == points


@pytest.mark.parametrize("value", ["range(3, 3)", "range(1, 5, 0)", "range(0.5, 0.5, 0.1)"])
def test_an_empty_range_is_an_error(value: str):
    with pytest.raises(ValueError, match="range sweep"):
        _one(value)


def test_a_continuous_distribution_has_no_grid():
    with pytest.raises(ValueError, match="discrete"):
        grammar.grid_choices(FloatDistribution(0.0, 1.0))
