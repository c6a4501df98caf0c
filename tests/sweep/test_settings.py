"""sesemi.sweep.settings: each trial's own sampler, seeded from the sweep's seed and the trial's number, so a resumed
sweep never draws its first parameters again and the same seed with the same history draws the same ones."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from sesemi.sweep import storage as storage_lib
from sesemi.sweep import study as study_lib
from sesemi.sweep.settings import SweepSettings, build_pruner, load_study, sampler_for_trial, take_trial


def journal_study(tmp_path: Path, direction: str = "maximize") -> optuna.Study:
    return optuna.create_study(
        study_name="s",
        storage=storage_lib.make_storage(None, tmp_path),
        direction=direction,
        sampler=optuna.samplers.RandomSampler(seed=0),
    )


def _settings(seed: int | None = 0, target: str = "optuna.samplers.TPESampler"):
    return SweepSettings(
        study_name="s",
        storage=None,
        sweep_dir="",
        session="x",
        n_trials=4,
        sampler={"_target_": target, "seed": seed},
        distributions={"x": optuna.distributions.FloatDistribution(0, 1)},
    )


def _draw(study: optuna.Study, settings) -> list[float]:
    drawn = []
    while (trial := take_trial(study, settings)) is not None:
        drawn.append(study_lib.suggest(trial, settings.distributions)["x"])
        study.tell(trial, drawn[-1])
    return drawn


@pytest.mark.parametrize("target", ["optuna.samplers.TPESampler", "optuna.samplers.RandomSampler"])
def test_resumed_sweeps_never_redraw_and_a_seed_reproduces(tmp_path: Path, target: str):
    """Each sweep command (and each worker) loads a fresh sampler with the same seed: seeding it from the trial
    number, not from the command, is what keeps a resumed sweep from drawing its first parameters again."""
    settings = _settings(target=target)
    runs = []
    for name in ("a", "b"):  # two studies, the same seed and history: the same draws
        study = journal_study(tmp_path / name)
        drawn = []
        for budget in (2, 4, 6):  # three commands on one study, each with a new sampler object
            study_lib.top_up(study, budget)
            drawn += _draw(study, settings)
        runs.append(drawn)
    assert len(runs[0]) == 6 and len(set(runs[0])) == 6, runs[0]
    assert runs[0] == runs[1]


def test_a_trials_sampler_is_seeded_by_the_sweeps_seed_and_its_number():
    settings = _settings(seed=3, target="optuna.samplers.RandomSampler")
    draws = {}
    for number in (0, 1, 0):
        sampler = sampler_for_trial(settings, number)
        assert isinstance(sampler, optuna.samplers.RandomSampler)
        draw = optuna.create_study(sampler=sampler).ask().suggest_float("x", 0, 1)  # its first draw
        draws.setdefault(number, []).append(draw)
    assert draws[0][0] == draws[0][1] != draws[1][0]
    assert isinstance(sampler_for_trial(_settings(seed=None)), optuna.samplers.TPESampler)
    assert isinstance(sampler_for_trial(SweepSettings("s", None, "", "x", 1)), optuna.samplers.TPESampler)


def test_the_study_is_loaded_with_the_sweeps_pruner(tmp_path: Path):
    journal_study(tmp_path)
    settings = _settings()
    settings.storage, settings.sweep_dir = None, str(tmp_path)
    assert isinstance(build_pruner(settings), optuna.pruners.NopPruner)
    settings.pruner = {"_target_": "optuna.pruners.MedianPruner", "n_startup_trials": 2}
    study = load_study(settings)
    assert study.study_name == "s" and isinstance(study.pruner, optuna.pruners.MedianPruner)
