"""The progress bar under a pipe (stdout captured, as in a SLURM .out file or `> log.txt`): a line per validation
and per `pipe_every_percent` of the run, no carriage-return redraws. (On a terminal: tests/test_readme.py.)"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import FAST, run_cli

PIPED = [a for a in FAST if not a.startswith(("callbacks.progress_bar", "trainer.max_steps", "trainer.val_check"))]


@pytest.mark.slow
def test_piped_progress_is_a_line_per_validation_and_per_quarter(workdir: Path):
    run = ["trainer.max_steps=20", "trainer.val_check_interval=10", "callbacks.progress_bar.pipe_every_percent=25"]
    proc = run_cli([*PIPED, *run], workdir, fast=False)
    assert "\r" not in proc.stdout
    lines = [line for line in proc.stdout.splitlines() if line.startswith("train:")]
    steps = [int(re.search(r"\| (\d+)/20 \[", line).group(1)) for line in lines]
    assert steps == [5, 10, 15, 20], proc.stdout  # validations at 10 and 20: one line each, with the new value
    assert "val/acc" not in lines[0] and all("val/acc=" in line for line in lines[1:])
    assert lines[-1].startswith("train: 100%")
