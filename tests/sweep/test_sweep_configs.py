"""Every hparams_search config composes with both sweepers, and its search space names keys that exist."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from sesemi import compose
from sesemi.sweep.grammar import search_space

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
# Optuna search spaces; `grid` is the default of -m, a plain grid of the command line's values.
SEARCHES = sorted(p.stem for p in (CONFIGS / "hparams_search").glob("*.yaml") if p.stem != "grid")
MISSING = object()


def test_there_are_searches():
    assert {"digits_fixmatch", "fmnist_fixmatch"} <= set(SEARCHES)


@pytest.mark.parametrize("sweeper", ["optuna_sync", "optuna_async"])
@pytest.mark.parametrize("name", SEARCHES)
def test_search_space_composes_and_names_real_keys(name: str, sweeper: str):
    GlobalHydra.instance().clear()
    cfg = compose([f"hparams_search={name}", f"hydra/sweeper={sweeper}"], return_hydra_config=True)
    s = cfg.hydra.sweeper
    assert s._target_ == "hydra_plugins.sesemi_plugins.OptunaSweeper" and s.mode == sweeper.split("_")[1]
    assert s.study_name == name and s.dir.endswith(f"sweeps/{name}")
    assert s.sampler.seed is not None
    if sweeper == "optuna_async":
        own = {"digits_pareto": "sesemi.sweep.pareto.ParetoPruner"}  # a search that picks its pruner keeps it
        assert s.workers == s.n_jobs and s.pruner._target_ == own.get(name, "optuna.pruners.MedianPruner")
    distributions, fixed, _ = search_space([f"{k}={v}" for k, v in s.params.items()])
    assert len(distributions) == len(s.params) >= 3 and not fixed
    for key in distributions:  # a swept key must exist: Hydra refuses overrides of unknown keys in every trial
        assert OmegaConf.select(cfg, key, default=MISSING) is not MISSING, f"{name}: {key} is not in the config"
    assert cfg.run.objective == "val/acc" and cfg.run.objective_mode == "max"


def test_hydras_own_optuna_sweeper_follows_the_objective_mode():
    """hydra/sweeper=optuna is the plugin's sweeper; only its direction defaults to run.objective_mode's."""
    GlobalHydra.instance().clear()
    cfg = compose(["hydra/sweeper=optuna"], return_hydra_config=True)
    low = compose(["hydra/sweeper=optuna", "run.objective_mode=min"], return_hydra_config=True)
    assert cfg.hydra.sweeper._target_ == "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper"
    assert cfg.run.objective_mode == "max" and cfg.hydra.sweeper.direction == "maximize"
    assert low.hydra.sweeper.direction == "minimize"
    assert cfg.hydra.sweeper.sampler._target_ == "optuna.samplers.TPESampler"


def test_a_plain_multirun_grid_runs_on_sesemis_grid_sweeper():
    """-m without an Optuna search space: sesemi's grid sweeper (Hydra's basic one, fit for large grids), which a
    launcher may detach; an hparams_search option replaces it."""
    GlobalHydra.instance().clear()
    assert compose([], return_hydra_config=True).hydra.sweeper._target_ == "hydra_plugins.sesemi_plugins.GridSweeper"
    chosen = compose(["hparams_search=digits_fixmatch"], return_hydra_config=True).hydra.sweeper
    assert chosen._target_ == "hydra_plugins.sesemi_plugins.OptunaSweeper"
