"""``hydra/sweeper/sampler=...`` is sesemi's own config group (configs/hydra/sweeper/sampler), so that sesemi's
sweepers need no Hydra Optuna plugin: each option builds its Optuna sampler, with the keys and defaults of the
plugin's option of the same name (compared with the plugin where it is installed)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import optuna
import pytest
from hydra import compose
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from sesemi.compat import hydra as hydra_compat

SAMPLERS = {
    "tpe": (optuna.samplers.TPESampler, "TPESamplerConfig"),
    "random": (optuna.samplers.RandomSampler, "RandomSamplerConfig"),
    "grid": (optuna.samplers.GridSampler, "GridSamplerConfig"),
    "cmaes": (optuna.samplers.CmaEsSampler, "CmaEsSamplerConfig"),
    "gp": (optuna.samplers.GPSampler, "GPSamplerConfig"),
    "qmc": (optuna.samplers.QMCSampler, "QMCSamplerConfig"),
    "nsgaii": (optuna.samplers.NSGAIISampler, "NSGAIISamplerConfig"),
}
CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "hydra" / "sweeper" / "sampler"
PLUGIN = importlib.util.find_spec("hydra_plugins.hydra_optuna_sweeper") is not None


def test_every_option_is_here():
    assert {p.stem for p in CONFIGS.glob("*.yaml")} == set(SAMPLERS)


@pytest.mark.parametrize("name", SAMPLERS)
def test_each_option_builds_its_sampler(name: str):
    GlobalHydra.instance().clear()
    with hydra_compat.initialize_config_module("sesemi.configs"):
        cfg = compose(
            "train",
            overrides=["hydra/sweeper=optuna_sync", f"hydra/sweeper/sampler={name}", "hydra.sweeper.sampler.seed=3"],
            return_hydra_config=True,
        )
    GlobalHydra.instance().clear()
    sampler = hydra_compat.instantiate(OmegaConf.to_container(cfg.hydra.sweeper.sampler))
    if name == "grid":  # the sweeper fills in the grid
        sampler = sampler(search_space={"x": [1, 2]})
    assert type(sampler) is SAMPLERS[name][0]


@pytest.mark.skipif(not PLUGIN, reason="hydra-optuna-sweeper is not installed (the hydra-optuna extra)")
@pytest.mark.parametrize("name", SAMPLERS)
def test_each_option_has_the_keys_and_defaults_of_hydras_optuna_plugin(name: str):
    from hydra_plugins.hydra_optuna_sweeper import config as plugin

    theirs = OmegaConf.to_container(OmegaConf.structured(getattr(plugin, SAMPLERS[name][1])))
    if name == "nsgaii":  # the plugin wraps the class to leave out `mutation` when it is null (Optuna 4)
        assert theirs.pop("mutation") is None
        theirs["_target_"] = "optuna.samplers.NSGAIISampler"
    assert OmegaConf.to_container(OmegaConf.load(CONFIGS / f"{name}.yaml")) == theirs
