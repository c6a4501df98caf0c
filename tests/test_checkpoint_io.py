"""Checkpoint writes are atomic: a failed write leaves the previous checkpoint as it was, and no temporary file; the
temporary file of a writer killed outright is removed by the next save, never that of a writer at work."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from sesemi.checkpoint_io import AtomicCheckpointIO


def test_a_checkpoint_replaces_the_previous_one_whole(tmp_path: Path):
    io = AtomicCheckpointIO()
    path = tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"global_step": 1}, path)
    io.save_checkpoint({"global_step": 2}, path)
    assert torch.load(path, weights_only=True)["global_step"] == 2
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]


def test_a_failed_write_keeps_the_previous_checkpoint_and_leaves_no_temporary_file(tmp_path: Path):
    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"global_step": 1}, path)
    before = path.read_bytes()
    with pytest.raises(Exception):  # noqa: B017 - whatever torch.save raises for an object it cannot pickle
        io.save_checkpoint({"global_step": 2, "bad": lambda: None}, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


# A checkpoint whose pickling stops half-way, in a process of its own: the real AtomicCheckpointIO has made and
# locked its temporary file and written part of it when the test kills the process with SIGKILL.
BLOCKED_WRITER = """
import pathlib, sys, time
import torch
from sesemi.checkpoint_io import AtomicCheckpointIO


class Stall:
    def __reduce__(self):
        pathlib.Path(sys.argv[2]).touch()  # the save is under way: its temporary file exists
        time.sleep(600)
        return (int, ())


AtomicCheckpointIO().save_checkpoint({"weights": torch.zeros(1 << 20), "stall": Stall()}, sys.argv[1])
"""


def _blocked_writer(path: Path, tmp_path: Path, name: str) -> subprocess.Popen:
    started = tmp_path / f"{name}.started"
    writer = subprocess.Popen([sys.executable, "-c", BLOCKED_WRITER, str(path), str(started)])
    deadline = time.monotonic() + 60
    while not started.exists():
        assert writer.poll() is None and time.monotonic() < deadline, "the writer never reached its save"
        time.sleep(0.05)
    return writer


def _temps(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


@pytest.mark.slow  # two writer processes that import torch and Lightning: 20-50 s on the busy 2-core machine
def test_the_temporary_file_of_a_writer_killed_mid_save_goes_at_the_next_save(tmp_path: Path):
    path = tmp_path / "checkpoints" / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"global_step": 1}, path)
    killed = _blocked_writer(path, tmp_path, "killed")
    (stale,) = _temps(path.parent)
    assert stale.startswith(".last.ckpt.")
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait()
    assert _temps(path.parent) == [stale]  # what kill -9 leaves: no process will ever remove it
    alive = _blocked_writer(path, tmp_path, "alive")  # a writer at work: its file must stay
    try:
        (working,) = set(_temps(path.parent)) - {stale}
        io.save_checkpoint({"global_step": 2}, path)
        assert _temps(path.parent) == [working]  # the dead writer's file is gone, the live one's kept
        assert torch.load(path, weights_only=True)["global_step"] == 2
    finally:
        alive.kill()
        alive.wait()
    io.save_checkpoint({"global_step": 3}, path)
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]


def test_a_temporary_file_of_another_tool_is_left_alone(tmp_path: Path):
    path = tmp_path / "last.ckpt"
    other = [tmp_path / ".notes.tmp", tmp_path / "last.ckpt.abcdefgh.tmp"]  # not hidden: not one of ours
    for file in other:
        file.write_text("x")
    AtomicCheckpointIO().save_checkpoint({"global_step": 1}, path)
    assert all(file.exists() for file in other)
