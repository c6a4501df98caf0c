"""sesemi.callbacks.heartbeat: a running job's progress in its ``status.json`` (step, max_steps, objective, speed and
a heartbeat time), written at most every ``every_s`` seconds, at once at a validation and at the end; in a real run."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import run_cli

from sesemi.callbacks.heartbeat import Heartbeat
from sesemi.rundir import RunRecord, read_status


def trainer(step: int, **metrics: float) -> SimpleNamespace:
    return SimpleNamespace(
        global_step=step, max_steps=10, is_global_zero=True, sanity_checking=False, callback_metrics=metrics
    )


def progress(run_dir: Path) -> dict:
    return read_status(run_dir)["progress"]


def test_progress_is_written_at_the_start_every_few_seconds_and_at_each_validation(tmp_path: Path):
    RunRecord(tmp_path).start()
    beat = Heartbeat(str(tmp_path), objective="val/acc", every_s=3600)
    beat.on_train_start(trainer(0), None)
    first = progress(tmp_path)
    assert (first["step"], first["max_steps"]) == (0, 10) and "objective" not in first
    assert datetime.fromisoformat(first["heartbeat"]) <= datetime.now(timezone.utc)
    beat.on_train_batch_end(trainer(1))
    assert progress(tmp_path)["step"] == 0  # within every_s of the last write: not written again
    beat.on_validation_end(trainer(2, **{"val/acc": 0.75}), None)
    assert progress(tmp_path)["step"] == 2 and progress(tmp_path)["objective"] == 0.75
    assert progress(tmp_path)["steps_per_s"] > 0
    beat.on_exception(trainer(3), None, KeyboardInterrupt())  # a signal stopped it: how far it got
    assert progress(tmp_path)["step"] == 3
    beat.on_train_end(trainer(4), None)
    assert progress(tmp_path)["step"] == 4 and read_status(tmp_path)["state"] == "running"


def test_only_global_rank_zero_writes(tmp_path: Path):
    RunRecord(tmp_path).start()
    other_rank = trainer(0)
    other_rank.is_global_zero = False
    Heartbeat(str(tmp_path)).on_train_start(other_rank, None)
    assert "progress" not in read_status(tmp_path)


@pytest.mark.slow
def test_a_run_keeps_its_progress_in_status_json(workdir: Path):
    run_cli([], workdir)  # the tiny default run (FAST: 6 steps)
    (record,) = [json.loads(p.read_text()) for p in workdir.glob("runs/default/*/status.json")]
    progress = record["progress"]
    assert (progress["step"], progress["max_steps"]) == (6, 6)
    assert 0 <= progress["objective"] <= 1 and progress["steps_per_s"] > 0
    assert datetime.fromisoformat(progress["heartbeat"]) <= datetime.now(timezone.utc)
