"""Each kind of bad input gets one clear ``sesemi: error:`` line naming the key and the fix, a non-zero exit, no run
that looks finished, and no change to any other run dir. The CLI runs with its default settings (loader workers
on), as a user would type it."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import numpy as np
import pytest
from conftest import read_json, run_cli, run_dirs
from faults import snapshot
from PIL import Image

from sesemi.checks import usable_cores
from sesemi.datasets import Digits


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A completed run dir (a few steps on digits), copied into every test's workspace as an innocent bystander."""
    root = tmp_path_factory.mktemp("finished")
    run_cli(["trainer.max_steps=3"], root)
    (run_dir,) = run_dirs(root)
    return run_dir


@pytest.fixture
def workspace(workdir: Path, finished_run: Path) -> Path:
    shutil.copytree(finished_run, workdir / "runs" / "previous" / finished_run.name)
    return workdir


def _fails(args: list[str], workdir: Path, key: str, *texts: str, run_dir_made: bool = True) -> str:
    """Run the CLI with default settings; assert exit 2, one error line naming ``key`` and ``texts``, a failed
    new run dir (or none), and every other file in the workspace unchanged. Returns the error line."""
    before = snapshot(workdir)
    old_dirs = set(run_dirs(workdir))
    proc = run_cli(args, workdir, fast=False, check=False)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and errors[0].startswith(f"sesemi: error: {key}: "), proc.stderr[-3000:]
    for text in texts:
        assert text in errors[0], errors[0]
    new_dirs = [d for d in run_dirs(workdir) if d not in old_dirs]
    assert len(new_dirs) == (1 if run_dir_made else 0)
    for run_dir in new_dirs:
        status = read_json(run_dir / "status.json")
        assert status["state"] == "failed" and key in status["error"]
        assert not (run_dir / "metrics.json").exists() and not (run_dir / "checkpoints").exists()
    new = tuple(str(d.relative_to(workdir)) + "/" for d in new_dirs)
    after = {path: digest for path, digest in snapshot(workdir).items() if not path.startswith(new)}
    assert after == before  # every other file byte-for-byte as it was, none added
    return errors[0]


def test_config_composition_errors_create_no_run_dir(workdir: Path):
    for args, expected in [
        (["data=nope"], ["Could not find 'data/nope'", "digits"]),  # lists the available options
        (["trainer.max_stepz=5"], ["max_stepz", "not in struct"]),
    ]:
        proc = run_cli(args, workdir, check=False)
        assert proc.returncode != 0 and "Traceback" not in proc.stderr
        assert all(text in proc.stderr for text in expected), proc.stderr[-3000:]
        assert not (workdir / "runs").exists()


@pytest.mark.slow
@pytest.mark.parametrize(
    "args, key, texts",
    [
        (["data.labels_per_class=1000"], "data.labels_per_class", ["lower data.labels_per_class to at most"]),
        (["model.backbone._target_=nopkg.nets.Net"], "model.backbone", ["No module named 'nopkg'", "run.src_dir"]),
        (["run.accelerator=gpu"], "run.accelerator", ["run.accelerator=auto or cpu"]),
        (["run.devices=0"], "run.devices", ["run.devices=1"]),
        (["run.mode=serve"], "run.mode", ["run.mode=fit, validate or test"]),
        (["run.mode=validate"], "run.checkpoint", ["run.checkpoint=<path>"]),
        (["run.resume=/nowhere/last.ckpt"], "run.resume", [".ckpt file or a run dir"]),
        (["run.objective=val/accuracy"], "run.objective", ["val/acc"]),
        (["data.labels_per_class=null"], "data.unlabeled_batch_size", ["method=supervised"]),
        (["method=supervised", "+method.loss_heads.fixmatch.threshold=0.9"], "method.loss_heads.fixmatch", ["=null"]),
        (
            ["data.train._target_=sesemi.datasets.FashionMNIST", "+data.train.root=${datapath:fmnist}"],
            "data.train",
            ["dataset-fashion-mnist"],
        ),
        # 100 labels over 2 processes: 50 each, less than one batch of 64 (Lightning would loop at 0 steps).
        (
            ["run.accelerator=cpu", "run.devices=2", "data.labeled_batch_size=64"],
            "data.labeled_batch_size",
            ["each of the 2 processes", "only 50 of the 100 labeled samples", "run.devices"],
        ),
        (["optimizer.lr=-0.1"], "optimizer", ["Invalid learning rate: -0.1"]),
        (["optimizer.lr=0"], "optimizer.lr", ["is 0", "optimizer.lr=0.03"]),
        (["trainer.max_steps=-5"], "trainer.max_steps", ["-5", "positive"]),
        (["trainer.max_steps=0"], "trainer.max_steps", ["got 0"]),
        (["trainer.max_steps=abc"], "trainer.max_steps", ["'abc'"]),
        (["run.precision=bogus"], "run.precision", ["'bogus'", "run.precision=auto"]),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else None,
)
def test_bad_values_fail_with_key_and_fix(workspace: Path, args, key, texts):
    _fails(args, workspace, key, *texts)


@pytest.mark.slow
def test_more_cpu_processes_than_cores(workspace: Path):
    cores = usable_cores()
    _fails(
        ["run.accelerator=cpu", f"run.devices={cores + 1}"],
        workspace,
        "run.devices",
        f"{cores + 1} CPU processes",
        f"only {cores} CPU cores",
    )


@pytest.mark.slow
def test_run_id_with_a_path_makes_no_dir_anywhere(workspace: Path):
    outside = workspace.parent / "escape"
    assert not outside.exists()
    _fails(["run.id=../../escape"], workspace, "run.id", "'../../escape'", run_dir_made=False)
    assert not outside.exists() and not (workspace / "runs" / "default").exists()  # no dir made anywhere


@pytest.mark.slow
def test_test_mode_without_a_test_set_is_an_error_not_a_val_result(workspace: Path, finished_run: Path):
    best = next((workspace / "runs" / "previous").glob("*/checkpoints/best.ckpt"))
    _fails(["run.mode=test", f"run.checkpoint={best}"], workspace, "run.mode", "no test set", "run.mode=validate")


# Image folders built from the embedded digits: PNG files, one sub-folder per class.
def _write_folder(root: Path, classes: list[int], per_class: int, split: str = "train", mode: str = "L") -> Path:
    digits = Digits(split=split)
    for label in classes:
        indices = [i for i, t in enumerate(digits.targets) if t == label][:per_class]
        (root / str(label)).mkdir(parents=True, exist_ok=True)
        for i in indices:
            image, _ = digits[i]
            image.convert(mode).save(root / str(label) / f"{i}.png")
    return root


FOLDER = ["data=image_folder", "augment=digits", "data.labels_per_class=4", "data.labeled_batch_size=8",
          "data.unlabeled_batch_size=16", "data.num_workers=2"]  # fmt: skip


def _folders(workspace: Path, train: list[int], val: list[int], mode: str = "L") -> list[str]:
    data = workspace / "data" / "images"
    _write_folder(data / "train", train, 12, "train", mode)
    _write_folder(data / "val", val, 5, "test", mode)
    return [*FOLDER, f"data.train.mode={mode}"]


@pytest.mark.slow
def test_validation_folder_missing_a_class_is_named(workspace: Path):
    args = _folders(workspace, [0, 1, 2], [0, 2])
    _fails(args, workspace, "data.val", "missing: ['1']", "training classes are ['0', '1', '2']")


@pytest.mark.slow
def test_validation_folder_with_an_unknown_class_is_named(workspace: Path):
    args = _folders(workspace, [0, 1], [0, 1, 7])
    _fails(args, workspace, "data.val", "unknown to training: ['7']")


@pytest.mark.slow
def test_one_class_folder(workspace: Path):
    args = _folders(workspace, [3], [3])
    _fails(args, workspace, "data.train", "1 class (3)", "at least 2")


@pytest.mark.slow
def test_rgb_folder_into_a_one_channel_backbone_names_the_keys(workspace: Path):
    args = _folders(workspace, [0, 1], [0, 1], mode="RGB")
    _fails(args, workspace, "model.backbone", "3 channel(s)", "model.backbone.in_channels=3", "data.train.mode=L")


@pytest.mark.slow
def test_corrupt_image_is_found_before_training(workspace: Path):
    args = _folders(workspace, [0, 1], [0, 1])
    bad = workspace / "data" / "images" / "train" / "1" / "broken.png"
    good = next(bad.parent.glob("*.png")).read_bytes()
    bad.write_bytes(good[: len(good) // 2])  # a truncated file: its header still reads as a PNG
    (bad.parent / "empty.png").write_bytes(b"")
    _fails(args, workspace, "data.train", "2 of 26 images cannot be decoded", "broken.png", "empty.png")


BACKBONES = """
    from sesemi.models import SmallCNN


    class WrongWidth(SmallCNN):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.out_features = 999


    class NoWidth(SmallCNN):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            del self.out_features
"""


@pytest.mark.slow
@pytest.mark.parametrize(
    "backbone, texts",
    [
        ("WrongWidth", ["returns 64 features per image", "out_features says 999", "equal to the real width: 64"]),
        ("NoWidth", ["NoWidth has no positive int attribute 'out_features'", "NoWidth.__init__"]),
    ],
)
def test_user_backbone_width_is_checked_on_a_real_batch(workspace: Path, backbone, texts):
    package = workspace / "src" / "mynets"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(textwrap.dedent(BACKBONES))
    _fails([f"model.backbone._target_=mynets.{backbone}"], workspace, "model.backbone", *texts)


def test_folder_dataset_verify_reports_every_bad_file(tmp_path: Path):
    from sesemi.datasets import ImageFolder
    from sesemi.datasets.errors import CorruptImagesError

    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / name / "ok.png")
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / "b" / "x.jpg")
    data = (tmp_path / "b" / "x.jpg").read_bytes()
    (tmp_path / "b" / "x.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptImagesError, match=r"1 of 3 images cannot be decoded: .*x\.jpg"):
        ImageFolder(tmp_path)
    unchecked = ImageFolder(tmp_path, verify=False)  # the file still names itself when it is read
    with pytest.raises(CorruptImagesError, match=r"x\.jpg"):
        unchecked[2]


# The shipped recipes, at their documented device count (one: no recipe or doc names another), give every process
# at least one full labeled batch; RECIPES says how many processes each could take before one would get none.
CLASSES = {"CIFAR10": 10, "CIFAR100": 100, "SVHN": 10, "STL10": 10, "FashionMNIST": 10, "Digits": 10}
RECIPES = {
    "cifar100_wrn28_8_fixmatch_10000": 158,  # 10000 labels, batch 64
    "cifar10_wrn28_fixmatch_250": 3,  # 250 labels, batch 64: not 4 GPUs
    "cifar10_wrn28_fixmatch_4000": 63,  # 4000 labels, batch 64
    "digits_supervised": 6,  # 100 labels, batch 16
    "fmnist_fixmatch": 1,  # 100 labels, batch 64: one process only
    "fmnist_supervised": 1,  # 100 labels, batch 64
    "stl10_fixmatch": 15,  # 1000 labels, batch 64
    "svhn_wrn28_fixmatch_1000": 15,  # 1000 labels, batch 64
}


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_shipped_recipes_fit_their_documented_device_count(recipe: str):
    from sesemi import compose
    from sesemi.data.datamodule import batches_per_process

    data = compose([f"experiment={recipe}"]).data
    labeled = int(data.labels_per_class) * CLASSES[data.train._target_.rsplit(".", 1)[1]]
    batch = int(data.labeled_batch_size)
    assert batches_per_process(labeled, batch, 1) >= 1
    most = RECIPES[recipe]
    assert batches_per_process(labeled, batch, most) >= 1 and batches_per_process(labeled, batch, most + 1) == 0
