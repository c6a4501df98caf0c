"""``python -m sesemi.predict`` on bad input: one ``sesemi: error:`` line with a fix that works when pasted, exit 2,
and nothing written (no CSV that calls validation predictions test predictions)."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest
from conftest import run_cli, run_dirs
from faults import snapshot

from sesemi.datasets import Digits

pytestmark = pytest.mark.slow  # a trained run, then the predict CLI, 5-15 s a call on 2 cores


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(launch dir, run dir) of a 6-step digits run: no test set in its data config."""
    root = tmp_path_factory.mktemp("predict_bad")
    run_cli([], root)
    (run_dir,) = run_dirs(root / "runs")
    return root, run_dir


def predict_fails(root: Path, args: list[str], key: str, *texts: str) -> str:
    """Assert exit 2, one error line naming ``key`` and ``texts``, no traceback, nothing written; return the Fix."""
    before = snapshot(root)
    proc = run_cli(["num_workers=0", *args], root, fast=False, module="sesemi.predict", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and errors[0].startswith(f"sesemi: error: {key}: "), proc.stderr[-3000:]
    for text in texts:
        assert text in errors[0], errors[0]
    assert snapshot(root) == before
    return errors[0].split(". Fix: ", 1)[1]


def predict(root: Path, args: list[str]) -> str:
    return run_cli(["num_workers=0", *args], root, fast=False, module="sesemi.predict").stdout


def test_dataset_test_without_a_test_set_is_refused(trained, tmp_path: Path):
    root, run_dir = trained
    fix = predict_fails(
        root,
        [f"checkpoint={run_dir}", "dataset=test"],
        "dataset",
        "is test but the checkpoint's run has no test set",
        "the validation set's predictions are not test predictions",
    )
    assert fix.startswith("predict the validation set with dataset=val,")
    out = tmp_path / "val.csv"
    assert "(accuracy" in predict(root, [f"checkpoint={run_dir}", "dataset=val", f"output={out}"])
    assert len(out.read_text().splitlines()) == 451  # the 450 validation images and the header


def test_an_empty_checkpoint_names_the_runs_good_one(trained, tmp_path: Path):
    root, run_dir = trained
    empty = tmp_path / "run" / "checkpoints" / "best.ckpt"
    empty.parent.mkdir(parents=True)
    (empty.parent / "last.ckpt").write_bytes((run_dir / "checkpoints" / "last.ckpt").read_bytes())
    empty.write_bytes(b"")
    images = tmp_path / "images"
    images.mkdir()
    Digits(split="test")[0][0].save(images / "a.png")
    fix = predict_fails(
        root,
        [f"checkpoint={empty}", f"images={images}"],
        "checkpoint",
        f"cannot load {empty}: it is empty (0 bytes)",
    )
    assert fix == f"give another checkpoint of the run: checkpoint={empty.parent / 'last.ckpt'}"
    assert "wrote 1 predictions" in predict(root, [fix.split(": ", 1)[1], f"images={images}"])


def test_a_folder_with_a_loop_and_bad_images_lists_them(trained, tmp_path: Path):
    root, run_dir = trained
    images = tmp_path / "images"
    digits = Digits(split="test")
    for i in range(4):
        (images / "part").mkdir(parents=True, exist_ok=True)
        digits[i][0].save(images / "part" / f"{i}.png")
    good = (images / "part" / "0.png").read_bytes()
    (images / "part" / "cut.png").write_bytes(good[: len(good) // 2])
    (images / "part" / "empty.png").write_bytes(b"")
    (images / "part" / "loop").symlink_to("..")
    args = [f"checkpoint={run_dir}", f"images={images}", f"output={tmp_path / 'out.csv'}"]
    fix = predict_fails(root, args, "images", f"the symbolic link {images / 'part' / 'loop'} -> ..")
    _paste_rm(fix)
    fix = predict_fails(
        root, args, "images", "2 of 6 images cannot be decoded", str(images / "part" / "cut.png"), "empty.png"
    )
    _paste_rm(fix)
    assert "wrote 4 predictions" in predict(root, args)


def _paste_rm(fix: str) -> None:
    (command,) = re.findall(r"\((rm [^)]*)\)", fix)
    subprocess.run(shlex.split(command), check=True)
