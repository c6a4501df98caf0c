"""experiment=fmnist_fixmatch end to end through the CLI: a few steps on the real Fashion-MNIST, and the error a
user gets when the data folder is missing."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import read_json, run_cli, run_dirs

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
# A few steps, and only a few evaluation batches of the 5,000 held-out validation and 10,000 test images.
SHORT = [
    "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=2",
    "data.eval_batch_size=64",
]


@pytest.mark.slow
@pytest.mark.skipif(
    not (FASHION_MNIST / "train-images-idx3-ubyte.gz").is_file(),
    reason=f"Fashion-MNIST is not installed at {FASHION_MNIST} (apt-get install dataset-fashion-mnist)",
)
def test_fmnist_fixmatch_trains_on_real_fashion_mnist(workdir: Path):
    data_root = workdir / "datasets"
    data_root.mkdir()
    (data_root / "fashion-mnist").symlink_to(FASHION_MNIST)
    proc = run_cli(["experiment=fmnist_fixmatch", f"run.data_root={data_root}", *SHORT], workdir)

    (run_dir,) = run_dirs(workdir / "runs" / "fmnist_fixmatch")
    assert read_json(run_dir / "status.json")["state"] == "completed"
    metrics = read_json(run_dir / "metrics.json")
    assert metrics["global_step"] == 6
    assert 0.0 <= metrics["objective"]["value"] <= 1.0
    assert "train/loss_fixmatch" in metrics["final"]
    assert 0.0 <= metrics["test"]["test/acc"] <= 1.0  # the official test split, evaluated after training
    assert "test/acc" in proc.stdout + proc.stderr

    config = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["sesemi_config"]
    assert config["data"]["train"]["root"] == str(data_root / "fashion-mnist")
    assert config["model"]["backbone"] == {
        "_target_": "sesemi.models.SmallCNN",
        "in_channels": 1,
        "width": 32,
        "stages": 3,
    }


def test_missing_fashion_mnist_names_the_folder_and_how_to_get_it(workdir: Path):
    proc = run_cli(["experiment=fmnist_fixmatch", "run.data_root=nowhere"], workdir, check=False)
    assert proc.returncode != 0
    expected_dir = workdir / "nowhere" / "fashion-mnist"
    assert str(expected_dir) in proc.stderr
    assert "apt-get install dataset-fashion-mnist" in proc.stderr
    assert "Traceback" not in proc.stderr
    (run_dir,) = run_dirs(workdir / "runs" / "fmnist_fixmatch")
    status = read_json(run_dir / "status.json")
    assert status["state"] == "failed"
    assert str(expected_dir) in status["error"]
