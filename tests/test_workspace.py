"""A user's own workspace (configs/ + src/) extends the built-in configs and injects all five plug-in kinds; it is
sesemi's apps' workspace only: another Hydra app in the same environment, launched from the same folder, reads its
own configs."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from conftest import read_json, run_cli, run_dirs
from hydra import compose
from hydra.core.global_hydra import GlobalHydra

from sesemi.compat import hydra as hydra_compat

EXAMPLE = Path(__file__).parent / "workspace_example"

# A plain Hydra app of someone else's, with a config group `db` of its own; it prints what it composed, where its
# configs came from and which search-path plugins this environment has.
OTHER_APP = """
import json

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.plugins import Plugins
from hydra.plugins.search_path_plugin import SearchPathPlugin
from omegaconf import OmegaConf


@hydra.main(config_path="conf", config_name="config")
def main(cfg):
    plugins = Plugins.instance().discover(SearchPathPlugin)
    print(json.dumps({
        "db": OmegaConf.to_container(cfg.db),
        "providers": [source.provider for source in HydraConfig.get().runtime.config_sources],
        "search_path_plugins": [f"{p.__module__}.{p.__name__}" for p in plugins],
    }))


if __name__ == "__main__":
    main()
"""


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip())


@pytest.fixture
def launch_dir(tmp_path: Path) -> Path:
    """A folder with a `configs/db/mysql.yaml` that is not the other app's."""
    _write(tmp_path / "launch" / "configs" / "db" / "mysql.yaml", "driver: from-the-launch-folder\n")
    return tmp_path / "launch"


def test_another_hydra_app_reads_its_own_configs_not_the_launch_folders(tmp_path: Path, launch_dir: Path):
    app = tmp_path / "other_app"
    _write(app / "app.py", OTHER_APP)
    _write(app / "conf" / "config.yaml", "defaults:\n  - db: mysql\n")
    _write(app / "conf" / "db" / "mysql.yaml", "driver: mysql\nuser: app\n")
    proc = subprocess.run(
        [sys.executable, str(app / "app.py"), f"hydra.run.dir={tmp_path / 'out'}", "hydra.output_subdir=null"],
        cwd=launch_dir,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    # sesemi's workspace plugin is installed here and Hydra ran it (else this test would prove nothing) ...
    assert any(p.endswith(".WorkspaceSearchPath") for p in seen["search_path_plugins"]), seen
    # ... and it left the other app alone
    assert seen["db"] == {"driver": "mysql", "user": "app"}
    assert "sesemi-workspace" not in seen["providers"]


def test_sesemis_app_searches_the_launch_folders_configs_first(launch_dir: Path, monkeypatch: pytest.MonkeyPatch):
    """The same folder, sesemi's training app: its `configs/` is searched first, so `db` is a group it offers."""
    monkeypatch.chdir(launch_dir)
    GlobalHydra.instance().clear()
    with hydra_compat.initialize_config_module("sesemi.configs"):
        cfg = compose("train", overrides=["+db=mysql"], return_hydra_config=True)
    GlobalHydra.instance().clear()
    assert cfg.db.driver == "from-the-launch-folder"
    assert cfg.hydra.runtime.config_sources[0].provider == "sesemi-workspace"


@pytest.mark.slow  # a real training run through the CLI (the fast tier is -m "not slow")
def test_user_configs_and_src_inject_dataset_augmentation_backbone_head_and_loss_head(workdir: Path):
    shutil.copytree(EXAMPLE, workdir, dirs_exist_ok=True)
    run_cli(["-cn", "my_experiment"], workdir)
    (run_dir,) = run_dirs(workdir / "runs" / "mine")

    metrics = read_json(run_dir / "metrics.json")
    # loss head: its loss and its own logged scalar reach the run's metrics
    assert "train/loss_feature_norm" in metrics["final"]
    assert "train/feature_norm/mean" in metrics["final"]
    # augmentation: it was called on training images (it leaves a marker in the launch dir)
    assert (workdir / "augmentation_was_called").is_file()

    state = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    # dataset: three classes only, so the head has three outputs
    # backbone + head: the user's LeNet and cosine head are the trained network
    assert state["model.head.prototypes"].shape == (3, 24)
    assert "model.backbone.conv1.weight" in state
    config = read_json(run_dir / "metrics.json")["run_dir"]
    assert config.startswith(str(workdir / "runs" / "mine"))


@pytest.mark.slow
def test_user_experiment_file_is_an_option_of_the_built_in_group(workdir: Path):
    shutil.copytree(EXAMPLE, workdir, dirs_exist_ok=True)
    run_cli(["experiment=three_digits", "trainer.max_steps=2"], workdir)
    (run_dir,) = run_dirs(workdir / "runs" / "three")
    assert read_json(run_dir / "status.json")["state"] == "completed"
