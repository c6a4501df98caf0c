"""Checkpoint writes are atomic: a failed write leaves the previous checkpoint as it was, and no temporary file."""

from __future__ import annotations

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
