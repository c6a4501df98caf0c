"""The built-in pruner configs (configs/hydra/sweeper/pruner/*.yaml), instantiated as the sweeper does: each but
``none`` prunes a trial far below the others."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from omegaconf import OmegaConf

from sesemi.compat.hydra import instantiate

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.mark.parametrize("name", ["none", "median", "successive_halving", "hyperband"])
def test_pruner_configs_prune_a_bad_trial(tmp_path: Path, name: str):
    node = OmegaConf.load(CONFIGS / "hydra" / "sweeper" / "pruner" / f"{name}.yaml")
    if name == "median":
        node.n_startup_trials = 2
    if name in ("successive_halving", "hyperband"):
        node.min_resource = 100  # ${trainer.val_check_interval} in a sweep
    if name == "hyperband":
        node.max_resource = 1000  # ${trainer.max_steps}
    pruner = instantiate(node)
    study = optuna.create_study(  # a fixed name: hyperband assigns brackets by a hash of it
        study_name="pruners", direction="maximize", pruner=pruner, sampler=optuna.samplers.RandomSampler(seed=0)
    )
    for _ in range(9):  # good trials, reporting at steps 100..1000
        trial = study.ask()
        for step in range(100, 1001, 100):
            trial.report(0.5 + step / 2000, step)
            assert not trial.should_prune() or name != "none"
        study.tell(trial, 1.0)
    bad = study.ask()
    pruned_at = None
    for step in range(100, 1001, 100):
        bad.report(0.1, step)
        if bad.should_prune():
            pruned_at = step
            break
    assert (pruned_at is None) == (name == "none")
