import os
import subprocess
import sys
from pathlib import Path

import pytest

from sesemi import rundir
from sesemi.errors import ConfigError
from sesemi.resolvers import claim_dir, run_dir
from sesemi.rundir import RunRecord, read_status


def test_a_timestamp_claimed_by_another_process_gets_a_suffix(tmp_path: Path):
    pattern = tmp_path / "runs" / "default" / "20260101_000000"
    pattern.mkdir(parents=True)  # another run started in the same second
    claimed = claim_dir(str(pattern))
    assert claimed.name == "20260101_000000_1" and claimed.is_dir()
    assert claim_dir(str(pattern)) == claimed  # the same process resolving its config again


def test_resume_resolves_to_the_run_dir_that_holds_the_checkpoint(tmp_path: Path):
    old = tmp_path / "runs" / "x" / "20260101_000000"
    RunRecord(old).start()
    (old / "checkpoints").mkdir()
    ckpt = old / "checkpoints" / "last.ckpt"
    ckpt.touch()
    assert rundir.find_run_dir(ckpt) == old
    assert run_dir(str(tmp_path / "runs"), "x", "new", str(ckpt)) == str(old)
    assert run_dir(str(tmp_path / "runs"), "x", "new", None) == str(tmp_path / "runs" / "x" / "new")


def test_failed_run_records_error_and_restarts_count(tmp_path: Path):
    record = RunRecord(tmp_path)
    record.start()
    record.fail(RuntimeError("boom"))
    status = read_status(tmp_path)
    assert status["state"] == "failed" and "boom" in status["error"]
    record.start()
    status = read_status(tmp_path)
    assert status["state"] == "running" and status["restarts"] == 1
    assert status["attempts"][1]["previous_state"] == "failed"
    assert not (tmp_path / "metrics.json").exists()


def test_a_run_dir_resolves_to_its_newest_state_for_training_and_best_for_inference(tmp_path: Path):
    RunRecord(tmp_path).start()
    ckpts = tmp_path / "checkpoints"
    ckpts.mkdir()
    with pytest.raises(ConfigError, match=r"run\.resume: .* without checkpoints/last\.ckpt"):
        rundir.resolve_checkpoint(tmp_path, "run.resume", rundir.RESUME)
    (ckpts / "last.ckpt").touch()
    (ckpts / "best.ckpt").touch()
    assert rundir.resolve_checkpoint(tmp_path, "run.resume", rundir.RESUME) == ckpts / "last.ckpt"
    assert rundir.resolve_checkpoint(tmp_path, "checkpoint", rundir.INFERENCE) == ckpts / "best.ckpt"
    assert rundir.resolve_checkpoint(ckpts, "checkpoint", rundir.INFERENCE) == ckpts / "best.ckpt"
    assert rundir.run_dir_of_checkpoint(ckpts / "last.ckpt") == tmp_path
    assert rundir.best_checkpoint(tmp_path) == str(ckpts / "best.ckpt")
    with pytest.raises(ConfigError, match="checkpoint: no checkpoint at"):
        rundir.resolve_checkpoint(tmp_path / "nope.ckpt", "checkpoint")
    with pytest.raises(ConfigError, match=r"run\.checkpoint: is not set"):
        rundir.resolve_checkpoint(None, "run.checkpoint")


def test_objective_of_a_fit_and_of_an_evaluation():
    fit = {"mode": "fit", "objective": {"name": "val/acc", "mode": "max", "value": 0.5}}
    assert rundir.objective_value(fit) == 0.5
    assert rundir.objective_value({"mode": "test", "test": {"test/loss": 1.0, "test/acc": 0.25}}) == 0.25
    assert rundir.objective_value({}) is None


def test_update_is_public_and_writes_no_temporary_file_beside_the_record(tmp_path: Path):
    record = RunRecord(tmp_path)
    record.start()
    record.update(note="x")
    record.complete({"global_step": 3})
    assert read_status(tmp_path)["note"] == "x" and read_status(tmp_path)["state"] == "completed"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json", "status.json"]


def test_concurrent_writers_never_leave_a_half_written_status(tmp_path: Path):
    """Several processes rewrite status.json at once (e.g. a sweep's reaper and the run): each write is a whole
    file under a temporary name of its own, renamed over the record."""
    RunRecord(tmp_path).start()
    code = (
        "import sys; from sesemi.rundir import RunRecord\n"
        "r = RunRecord(sys.argv[1])\n"
        "for i in range(200): r.update(writer=sys.argv[2], i=i)\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path), str(n)], env=os.environ) for n in range(3)]
    for _ in range(300):
        assert read_status(tmp_path) is not None  # never a partial file
    assert [p.wait() for p in procs] == [0, 0, 0]
    assert read_status(tmp_path)["i"] == 199
    assert sorted(p.name for p in tmp_path.iterdir()) == ["status.json"]
