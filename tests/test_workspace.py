"""A user's own workspace (configs/ + src/) extends the built-in configs and injects all five plug-in kinds."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from conftest import read_json, run_cli, run_dirs

pytestmark = pytest.mark.slow  # real training runs through the CLI (the fast tier is -m "not slow")

EXAMPLE = Path(__file__).parent / "workspace_example"


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


def test_user_experiment_file_is_an_option_of_the_built_in_group(workdir: Path):
    shutil.copytree(EXAMPLE, workdir, dirs_exist_ok=True)
    run_cli(["experiment=three_digits", "trainer.max_steps=2"], workdir)
    (run_dir,) = run_dirs(workdir / "runs" / "three")
    assert read_json(run_dir / "status.json")["state"] == "completed"
