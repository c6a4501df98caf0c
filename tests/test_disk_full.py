"""A disk that fills up during a run: the previous good checkpoint stays, the run says `failed` with the reason, and
the process exits non-zero. The run dir lives on a small tmpfs (mounting one needs root)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import read_json, run_dirs
from faults import FAULT, install_slow

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs to fill up needs root")


@pytest.fixture
def small_disk(tmp_path: Path):
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.slow
def test_a_disk_filling_up_mid_run_keeps_the_last_good_checkpoint_and_fails_the_run(workdir: Path, small_disk: Path):
    args = [*FAULT, "trainer.max_steps=200", f"run.dir={small_disk}", *install_slow(workdir)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "sesemi.train", *args], cwd=workdir, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 180
    while not list(small_disk.rglob("last.ckpt")):
        assert time.monotonic() < deadline and proc.poll() is None, "no checkpoint was written"
        time.sleep(0.05)
    (last,) = small_disk.rglob("last.ckpt")
    time.sleep(0.2)  # let the first save (best and last) finish
    good = last.read_bytes()
    free = os.statvfs(small_disk).f_bavail * os.statvfs(small_disk).f_frsize
    (small_disk / "filler").write_bytes(b"\0" * (free - 96 * 1024))  # room for status.json, not for a checkpoint
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode != 0, stderr.decode()[-3000:]
    (run_dir,) = run_dirs(small_disk)
    status = read_json(run_dir / "status.json")
    assert status["state"] == "failed", status
    assert "No space left on device" in status["error"] or "file write failed" in status["error"], status["error"]
    assert last.read_bytes() == good  # the previous good checkpoint, whole
    assert torch.load(last, map_location="cpu", weights_only=False)["global_step"] > 0
    assert not [p.name for p in run_dir.rglob("*.tmp")]  # no half-written temp file left behind
    assert not (run_dir / "metrics.json").exists()
