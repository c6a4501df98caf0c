"""sesemi.compose: the training app's config as ``python -m sesemi.train <overrides>`` composes it, from any folder,
with the launch folder's workspace ``configs/`` first, the resolvers registered, the run dir given."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from sesemi import compose


def test_compose_gives_the_apps_config_with_the_overrides_and_the_run_dir(tmp_path: Path):
    cfg = compose(["optimizer.lr=0.5", "method=fixmatch"], output_dir=tmp_path / "run")
    assert cfg.optimizer.lr == 0.5 and cfg.run.output_dir == str(tmp_path / "run")
    assert "fixmatch" in cfg.method.loss_heads and "hydra" not in cfg
    assert OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves: the resolvers are registered


def test_the_hydra_node_is_there_when_asked():
    cfg = compose(["hydra/launcher=local"], return_hydra_config=True)
    assert cfg.hydra.runtime.choices["hydra/launcher"] == "local"
    assert cfg.hydra.launcher._target_.endswith(".LocalLauncher")


def test_the_launch_folders_workspace_configs_come_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    (tmp_path / "configs" / "optimizer").mkdir(parents=True)
    (tmp_path / "configs" / "optimizer" / "mine.yaml").write_text("_target_: torch.optim.SGD\nlr: 0.123\n")
    monkeypatch.chdir(tmp_path)
    assert compose(["optimizer=mine"]).optimizer.lr == 0.123
