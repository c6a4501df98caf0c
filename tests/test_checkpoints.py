"""Reading checkpoints (``sesemi.checkpoints.load_checkpoint``) and checking one against a built model
(``sesemi.checks.check_eval_checkpoint``, for ``run.mode=validate|test``): a file that is no checkpoint, or one of
another model, is one ConfigError naming the key, with a fix that works when pasted."""

from __future__ import annotations

import shlex
import shutil
from pathlib import Path

import pytest
import torch
from conftest import compose_config, run_cli, run_dirs

from sesemi.checkpoints import Mismatch, load_checkpoint
from sesemi.checks import check_eval_checkpoint
from sesemi.errors import ConfigError


@pytest.fixture
def checkpoints(tmp_path: Path) -> Path:
    folder = tmp_path / "run" / "checkpoints"
    folder.mkdir(parents=True)
    torch.save({"state_dict": {"w": torch.ones(2)}}, folder / "best.ckpt")
    return folder


def test_an_empty_file_names_the_key_and_the_runs_good_checkpoint(checkpoints: Path):
    (checkpoints / "last.ckpt").write_bytes(b"")  # what a kill during a save used to leave
    with pytest.raises(ConfigError) as info:
        load_checkpoint(checkpoints / "last.ckpt", "run.checkpoint")
    err = info.value
    assert err.key == "run.checkpoint"
    assert err.problem.startswith(f"cannot load {checkpoints / 'last.ckpt'}: it is empty (0 bytes)")
    assert err.fix == f"give another checkpoint of the run: run.checkpoint={checkpoints / 'best.ckpt'}"
    assert torch.load(checkpoints / "best.ckpt", weights_only=True)["state_dict"]["w"].sum() == 2


@pytest.mark.parametrize(
    "content, reason",
    [
        (lambda good: good[: len(good) // 2], "RuntimeError: PytorchStreamReader failed reading zip archive"),
        (lambda good: b"hello, not a checkpoint", "KeyError"),
        (lambda good: b"V" * 64, "UnpicklingError: Weights only load failed"),  # an opcode torch refuses
    ],
    ids=["truncated", "text", "not a zip"],
)
def test_a_file_that_is_no_checkpoint_is_one_error(checkpoints: Path, content, reason: str):
    (checkpoints / "best.ckpt").rename(checkpoints / "other.pt")
    bad = checkpoints / "best.ckpt"
    bad.write_bytes(content((checkpoints / "other.pt").read_bytes()))
    with pytest.raises(ConfigError) as info:
        load_checkpoint(bad, "checkpoint")
    assert info.value.problem.startswith(f"cannot load {bad}: {reason}"), info.value.problem
    assert "could run code" not in str(info.value)  # bytes that are no pickle are not a security refusal
    fix = "give checkpoint a checkpoint written by python -m sesemi.train (a run's checkpoints/best.ckpt)"
    assert info.value.fix == fix  # no other checkpoint beside it to suggest


def test_pickled_objects_are_still_refused_as_code(tmp_path: Path):
    path = tmp_path / "objects.ckpt"
    torch.save({"state_dict": {}, "hook": print}, path)
    with pytest.raises(ConfigError, match="holds pickled objects that are not plain weights"):
        load_checkpoint(path, "run.pretrained_checkpoint")


def test_mismatch_names_each_kind_of_difference():
    model = {"a.weight": torch.zeros(3, 2), "a.bias": torch.zeros(3), "b": torch.zeros(1), "extra": {"state": 1}}
    given = {"a.weight": torch.zeros(4, 2), "a.bias": torch.zeros(3), "c": torch.zeros(1), "extra": {"state": 2}}
    mismatch = Mismatch.of(model, given)
    assert not mismatch.fits
    assert mismatch.describe(len(given)) == (
        "1 of another shape (a.weight: (4, 2) in the file, (3, 2) in the model), 1 missing from the file (b), "
        "1 not in the model (c)"
    )
    foreign = Mismatch.of(model, {"conv1.weight": torch.zeros(1)})
    assert foreign.describe(1).startswith("none of its 1 weights has a name the model has")
    assert Mismatch.of(model, model).fits


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("eval_checkpoint")
    run_cli(["trainer.max_steps=3"], root)
    (run_dir,) = run_dirs(root)
    return run_dir


def _module(tmp_path: Path, *overrides: str):
    from sesemi.builders import build_datamodule, build_module

    cfg = compose_config(tmp_path / "out", overrides)
    datamodule = build_datamodule(cfg)
    return build_module(cfg, datamodule.num_classes, datamodule.class_names)


@pytest.mark.slow
def test_check_eval_checkpoint_refuses_another_model_with_a_fix_that_works(finished_run: Path, tmp_path: Path):
    best = finished_run / "checkpoints" / "best.ckpt"
    check_eval_checkpoint(_module(tmp_path), best)  # the run's own model: fits
    with pytest.raises(ConfigError) as info:
        check_eval_checkpoint(_module(tmp_path, "model.backbone.width=16"), best, "run.checkpoint")
    err = info.value
    assert err.key == "run.checkpoint"
    assert err.problem.startswith(f"{best} does not fit this run's model: ")
    assert "model.backbone.features.0.0.weight: (32, 1, 3, 3) in the file, (16, 1, 3, 3) in the model" in err.problem
    command = shlex.split(err.fix.split("rebuilds: ", 1)[1])
    assert command[:3] == ["python", "-m", "sesemi.predict"]
    out = tmp_path / "val.csv"
    proc = run_cli([*command[3:], f"output={out}", "num_workers=0"], tmp_path, fast=False, module="sesemi.predict")
    assert "accuracy" in proc.stdout and out.is_file()


@pytest.mark.slow
def test_check_eval_checkpoint_names_an_empty_file(finished_run: Path, tmp_path: Path):
    empty = tmp_path / "checkpoints" / "last.ckpt"
    empty.parent.mkdir()
    shutil.copy(finished_run / "checkpoints" / "best.ckpt", empty.parent / "best.ckpt")
    empty.write_bytes(b"")
    with pytest.raises(ConfigError) as info:
        check_eval_checkpoint(_module(tmp_path), empty)
    assert info.value.key == "run.checkpoint" and "it is empty (0 bytes)" in info.value.problem
    check_eval_checkpoint(_module(tmp_path), info.value.fix.split("run.checkpoint=", 1)[1])  # the fix's file fits
