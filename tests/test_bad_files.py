"""Bad files and places through the real training CLI: image folders (symlink loops, empty classes, images the
transforms cannot take, class names that need quoting), checkpoints that do not fit, run dirs that cannot be made.

Each case asserts exit status 2, exactly one ``sesemi: error: <key>: <problem>. Fix: <fix>`` line and no traceback,
a new run dir that says ``failed`` (or none at all), every other file of the workspace byte-for-byte as it was, and
then pastes the printed Fix into a second run (a shell command, or an override) that completes."""

from __future__ import annotations

import os
import re
import resource
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import FAST, read_json, run_cli, run_dirs
from faults import snapshot
from PIL import Image

from sesemi.datasets import Digits

pytestmark = pytest.mark.slow  # every test runs the CLI, 10-15 s a run on 2 cores

FOLDER = ["data=image_folder", "augment=digits", "data.train.mode=L", "data.num_workers=0"]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A completed digits run (small_cnn, 10 classes, width 32), copied into each workspace as a bystander and as
    a source of real checkpoints."""
    root = tmp_path_factory.mktemp("finished")
    run_cli(["trainer.max_steps=3"], root)
    (run_dir,) = run_dirs(root)
    return run_dir


@pytest.fixture
def workspace(workdir: Path, finished_run: Path) -> Path:
    shutil.copytree(finished_run, workdir / "runs" / "previous" / finished_run.name, symlinks=True)
    return workdir


def previous_run(workspace: Path) -> Path:
    (run_dir,) = (workspace / "runs" / "previous").iterdir()
    return run_dir


def write_folder(root: Path, classes: dict[str, int], per_class: int, split: str = "train") -> Path:
    """``root/<name>/<i>.png`` for each class name, the 8x8 digits of label ``classes[name]`` (None: an empty
    folder)."""
    digits = Digits(split=split)
    for name, label in classes.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        indices = [i for i, t in enumerate(digits.targets) if t == label][:per_class] if label is not None else []
        for i in indices:
            digits[i][0].save(root / name / f"{i}.png")
    return root


def folders(workspace: Path, train: dict, val: dict) -> tuple[Path, Path]:
    images = workspace / "data" / "images"
    return write_folder(images / "train", train, 12), write_folder(images / "val", val, 5, "test")


def fails(args: list[str], workspace: Path, key: str, *texts: str, run_dir_made: bool = True, **kwargs) -> str:
    """Run the CLI; assert exit 2, one error line naming ``key`` and ``texts``, a failed new run dir (or none) and
    every other file unchanged. Returns the Fix the line prints."""
    before = snapshot(workspace)
    old = set(run_dirs(workspace))
    proc = run_cli(args, workspace, check=False, **kwargs)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and errors[0].startswith(f"sesemi: error: {key}: "), proc.stderr[-3000:]
    for text in texts:
        assert text in errors[0], errors[0]
    new = [d for d in run_dirs(workspace) if d not in old]
    assert len(new) == (1 if run_dir_made else 0), new
    for run_dir in new:
        status = read_json(run_dir / "status.json")
        assert status["state"] == "failed" and key in status["error"], status
        assert not (run_dir / "metrics.json").exists() and not (run_dir / "checkpoints").exists()
    made = tuple(str(d.relative_to(workspace)) + "/" for d in new)
    assert {p: h for p, h in snapshot(workspace).items() if not p.startswith(made)} == before
    return errors[0].split(". Fix: ", 1)[1]


def completes(args: list[str], workspace: Path, **kwargs) -> Path:
    """Run the CLI (FAST settings) and return the new run dir, which says ``completed``."""
    old = set(run_dirs(workspace))
    run_cli(args, workspace, **kwargs)
    (run_dir,) = [d for d in run_dirs(workspace) if d not in old]
    assert read_json(run_dir / "status.json")["state"] == "completed"
    return run_dir


def paste_command(fix: str, command: str) -> None:
    """Run the shell command ``command ...`` that ``fix`` prints in parentheses, e.g. ``(rm /a/b)``."""
    (words,) = re.findall(rf"\(({command} [^)]*)\)", fix)
    subprocess.run(shlex.split(words), check=True)


def override_in(fix: str, key: str) -> str:
    """The ``key=...`` (or ``++key=...``) override ``fix`` prints, as the shell passes it when pasted (the prose
    around it is no shell input: only that word is read, without a comma or full stop that ends a clause)."""
    (start,) = [m.start(1) for m in re.finditer(rf"(?:^|\s)('?(?:\+\+)?{re.escape(key)}=)", fix)]
    lexer = shlex.shlex(fix[start:], posix=True)
    lexer.whitespace_split = True
    return lexer.get_token().rstrip(",;.)")


# -- image folders -----------------------------------------------------------------------------------------------


def run_bounded(args: list[str], cwd: Path, timeout: float, memory: int) -> tuple[int, str, float, int]:
    """The CLI under an address-space limit of ``memory`` bytes, killed after ``timeout`` s: (exit status, stderr,
    seconds, peak resident memory in bytes of the process and its waited-for children)."""

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))

    err = cwd / "stderr.txt"
    started = time.monotonic()
    with open(err, "w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sesemi.train", *FAST, *args],
            cwd=cwd,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            preexec_fn=limit,
        )
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() - started > timeout:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.2)
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait for it again
    text = err.read_text()
    err.unlink()
    return proc.returncode, text, time.monotonic() - started, usage.ru_maxrss * 1024


@pytest.mark.parametrize("link, target", [("loop", ".."), ("self", ".")])
def test_a_symlink_loop_fails_at_once_in_bounded_time_and_memory(workspace: Path, link: str, target: str):
    train, _ = folders(workspace, {"0": 0, "1": 1}, {"0": 0, "1": 1})
    (train / "1" / link).symlink_to(target)
    before = snapshot(workspace)
    code, stderr, seconds, peak = run_bounded(FOLDER, workspace, timeout=120, memory=16 << 30)
    assert code == 2 and "Traceback" not in stderr, stderr[-3000:]
    assert seconds < 90 and peak < 2 << 30, (seconds, peak)  # the scan of a loop once took 16 GB in 10 minutes
    (line,) = [line for line in stderr.splitlines() if "error:" in line]
    assert line.startswith(f"sesemi: error: data.train: DatasetFilesError: the symbolic link {train / '1' / link}")
    (run_dir,) = [d for d in run_dirs(workspace) if "previous" not in d.parts]
    assert read_json(run_dir / "status.json")["state"] == "failed"
    made = str(run_dir.relative_to(workspace)) + "/"
    assert {p: h for p, h in snapshot(workspace).items() if not p.startswith(made)} == before
    paste_command(line.split(". Fix: ", 1)[1], "rm")
    completes(FOLDER, workspace)


def test_an_empty_class_folder_is_named_and_its_fix_works(workspace: Path):
    folders(workspace, {"0": 0, "1": 1, "2": None}, {"0": 0, "1": 1})
    fix = fails(FOLDER, workspace, "data.train", "the class folder(s) '2' hold no images")
    paste_command(fix, "rmdir")
    completes(FOLDER, workspace)


def test_labels_per_class_names_a_class_without_samples(workspace: Path):
    folders(workspace, {"0": 0, "1": 1, "2": None}, {"0": 0, "1": 1, "2": 2})
    fix = fails(FOLDER, workspace, "data.train", "'2' hold no images")
    kept = override_in(fix, "data.train.allow_empty_classes")
    assert kept == "++data.train.allow_empty_classes=true"
    fails([*FOLDER, kept], workspace, "data.labels_per_class", "class(es) '2' have none")
    completes([*FOLDER, kept, "method=supervised", "data.labels_per_class=null"], workspace)


@pytest.mark.parametrize(
    "where, size, texts",
    [
        ("train", (1, 1), ["the 'weak' view fails on 1 of 25 images", "(1x1 pixels)", "Required crop size (8, 8)"]),
        ("val", (16, 16), ["the 'image' view makes tensors of another shape of 1 of 11 images", "(1, 16, 16)"]),
    ],
)
def test_an_image_the_transforms_cannot_take_is_named_before_training(workspace: Path, where, size, texts):
    train, val = folders(workspace, {"0": 0, "1": 1}, {"0": 0, "1": 1})
    odd = (train if where == "train" else val) / "1" / "odd.png"
    Image.fromarray(np.full(size[::-1], 128, np.uint8)).save(odd)
    fix = fails(FOLDER, workspace, f"data.{where}", str(odd), *texts)
    paste_command(fix, "rm")
    completes(FOLDER, workspace)


def test_the_class_mismatch_fix_works_when_pasted_with_spaces_in_names(workspace: Path):
    names = {"big cat": 0, "dog": 1, "small cat": 2}
    folders(workspace, names, {**names, "zebra crossing": 3})
    fix = fails(FOLDER, workspace, "data.val", "unknown to training: ['zebra crossing']")
    classes = override_in(fix, "data.val.classes")
    assert classes == '++data.val.classes=["big cat",dog,"small cat"]'
    run_dir = completes([*FOLDER, classes], workspace)
    assert read_json(run_dir / "metrics.json")["classes"]["val"]["classes"] == list(names)


# -- data settings -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad, key, text",
    [
        ("data.labels_per_class=2.5", "data.labels_per_class", "must be a whole number of samples per class, got 2.5"),
        ("data.labeled_batch_size=0", "data.labeled_batch_size", "must be a whole number of samples per batch"),
    ],
)
def test_a_bad_count_is_refused_and_its_fix_works(workspace: Path, bad: str, key: str, text: str):
    fix = fails([bad], workspace, key, text)
    completes([override_in(fix, key)], workspace)


# -- run.pretrained_checkpoint -----------------------------------------------------------------------------------


def test_a_state_dict_of_another_network_is_refused(workspace: Path):
    import torchvision

    resnet = workspace / "resnet18.pt"
    torch.save(torchvision.models.resnet18().state_dict(), resnet)
    fix = fails(
        [f"run.pretrained_checkpoint={resnet}"],
        workspace,
        "run.pretrained_checkpoint",
        "does not fit this run's backbone (SmallCNN): none of its 122 weights has a name the model has",
    )
    completes([override_in(fix, "run.pretrained_checkpoint")], workspace)


def test_a_checkpoint_of_another_width_is_one_error_line(workspace: Path):
    best = previous_run(workspace) / "checkpoints" / "best.ckpt"
    fails(
        [f"run.pretrained_checkpoint={best}", "model.backbone.width=16"],
        workspace,
        "run.pretrained_checkpoint",
        "of another shape (model.backbone.",
        "in the file, (16, 1, 3, 3) in the model",
    )


def test_a_checkpoint_of_another_class_count_starts_from_its_backbone_as_the_fix_says(workspace: Path):
    folders(workspace, {"0": 0, "1": 1, "2": 2}, {"0": 0, "1": 1, "2": 2})
    best = previous_run(workspace) / "checkpoints" / "best.ckpt"
    fix = fails(
        [*FOLDER, f"run.pretrained_checkpoint={best}"],
        workspace,
        "run.pretrained_checkpoint",
        "model.head.fc.weight: (10, 64) in the file, (3, 64) in the model",
    )
    command = shlex.split(fix.split(" with: ", 1)[1])
    assert command[:2] == ["python", "-c"] and command[3] == "then"
    subprocess.run([sys.executable, "-c", command[2]], cwd=workspace, check=True)
    run_dir = completes([*FOLDER, command[4]], workspace)
    config = (run_dir / ".hydra" / "config.yaml").read_text()
    assert "pretrained_checkpoint: best_backbone.pt" in config


def test_an_empty_pretrained_checkpoint_names_the_key_and_the_good_one(workspace: Path):
    last = previous_run(workspace) / "checkpoints" / "last.ckpt"
    last.write_bytes(b"")  # what a kill -9 during the first write of a save used to leave
    fix = fails(
        [f"run.pretrained_checkpoint={last}"],
        workspace,
        "run.pretrained_checkpoint",
        f"cannot load {last}: it is empty (0 bytes)",
    )
    assert override_in(fix, "run.pretrained_checkpoint") == f"run.pretrained_checkpoint={last.parent / 'best.ckpt'}"
    completes([override_in(fix, "run.pretrained_checkpoint")], workspace)


# -- run dirs that cannot be made --------------------------------------------------------------------------------


@pytest.fixture
def read_only(workspace: Path):
    """A folder no run can write to: immutable for root (whom permissions do not stop), else without write bits."""
    folder = workspace / "read_only"
    folder.mkdir()
    as_root = os.geteuid() == 0
    subprocess.run(["chattr", "+i", str(folder)] if as_root else ["chmod", "a-w", str(folder)], check=True)
    yield folder
    subprocess.run(["chattr", "-i", str(folder)] if as_root else ["chmod", "u+w", str(folder)], check=True)


def test_a_read_only_run_dir_is_one_error_line_and_makes_nothing(workspace: Path, read_only: Path):
    home = workspace / "home"
    fix = fails(
        [f"run.dir={read_only / 'runs'}"],
        workspace,
        "run.dir",
        f"cannot make the run dir {read_only / 'runs'}/default/",
        run_dir_made=False,
        env={"HOME": str(home)},
    )
    assert not any(read_only.iterdir())
    assert override_in(fix, "run.dir") == f"run.dir={home / 'sesemi' / 'runs'}"
    run_dir = completes([override_in(fix, "run.dir")], workspace, env={"HOME": str(home)})
    assert run_dir.is_relative_to(home / "sesemi" / "runs")


def test_a_run_id_too_long_for_a_directory_name_makes_nothing(workspace: Path):
    fix = fails(["run.id=" + "x" * 300], workspace, "run.id", "is 300 bytes long", run_dir_made=False)
    assert not (workspace / "runs" / "default").exists()
    assert override_in(fix, "run.id") == "run.id=" + "x" * 64
    completes([override_in(fix, "run.id")], workspace)


# -- run.mode=validate|test with run.checkpoint ------------------------------------------------------------------


@pytest.mark.parametrize("case", ["empty", "another width"])
def test_an_evaluated_checkpoint_that_does_not_fit_is_one_error_line(workspace: Path, case: str):
    checkpoints = previous_run(workspace) / "checkpoints"
    if case == "empty":
        (checkpoints / "last.ckpt").write_bytes(b"")
        args, text = [f"run.checkpoint={checkpoints / 'last.ckpt'}"], "it is empty (0 bytes)"
    else:
        args, text = [f"run.checkpoint={checkpoints / 'best.ckpt'}", "model.backbone.width=16"], "does not fit"
    fails(["run.mode=validate", *args], workspace, "run.checkpoint", text)
