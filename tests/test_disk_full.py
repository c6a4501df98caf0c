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
    # What a user does next (docs/cluster.md, "After a fault"): free space, resume from the last good checkpoint.
    (small_disk / "filler").unlink()
    step = torch.load(last, map_location="cpu", weights_only=False)["global_step"]
    resumed = subprocess.run(
        [sys.executable, "-m", "sesemi.train", f"run.resume={run_dir}", f"trainer.max_steps={step + 3}"],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    status = read_json(run_dir / "status.json")
    assert status["state"] == "completed" and status["attempts"][-1]["previous_state"] == "failed", status
    assert read_json(run_dir / "metrics.json")["global_step"] == step + 3


@pytest.fixture
def full_disk(tmp_path: Path):
    """A 16 MB tmpfs filled up but for 64 KB: room for the run dir's config (every loss head's arguments
    included) and a first status, not for the rest (a checkpoint, the TensorBoard events)."""
    mount = tmp_path / "full"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)], capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.decode().strip()}")
    try:
        free = os.statvfs(mount).f_bavail * os.statvfs(mount).f_frsize
        (mount / "filler").write_bytes(b"\0" * (free - 64 * 1024))
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.slow
def test_a_disk_full_at_launch_never_leaves_a_run_that_says_running(workdir: Path, full_disk: Path):
    """Issue 30, item 13: the run cannot write its end (``failed`` needs room too), so its ``status.json`` keeps
    saying ``running``; ``sesemi.status`` reads the record with the process it names, which is gone: ``lost``."""
    proc = subprocess.run(
        [sys.executable, "-m", "sesemi.train", *FAULT, f"run.dir={full_disk}"],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode != 0 and "No space left on device" in proc.stderr, proc.stderr[-3000:]
    (run_dir,) = run_dirs(full_disk)
    recorded = read_json(run_dir / "status.json")["state"]
    assert recorded in ("running", "failed"), recorded  # running: the writer could not say it failed
    shown = subprocess.run(
        [sys.executable, "-m", "sesemi.status", str(run_dir)], cwd=workdir, capture_output=True, text=True
    )
    row = shown.stdout.splitlines()[1]
    assert (" lost " if recorded == "running" else " failed ") in f" {row} ", shown.stdout
    assert "running" not in shown.stdout and shown.returncode != 0, shown.stdout
    # What a user does next (docs/cluster.md, "After a fault"): free space and run the command again.
    (full_disk / "filler").unlink()
    again = subprocess.run(
        [sys.executable, "-m", "sesemi.train", *FAULT, f"run.dir={full_disk}"],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert again.returncode == 0, again.stderr[-3000:]
    (new,) = [d for d in run_dirs(full_disk) if d != run_dir]
    assert read_json(new / "status.json")["state"] == "completed"
