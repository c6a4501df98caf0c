from pathlib import Path

from sesemi.resolvers import claim_dir, run_dir, run_dir_of
from sesemi.rundir import RunRecord, read_status


def test_claiming_the_same_timestamp_twice_gives_two_dirs(tmp_path: Path):
    pattern = str(tmp_path / "runs" / "default" / "20260101_000000")
    first, second = claim_dir(pattern), claim_dir(pattern)
    assert first != second and first.is_dir() and second.is_dir()
    assert second.name == "20260101_000000_1"


def test_resume_resolves_to_the_run_dir_that_holds_the_checkpoint(tmp_path: Path):
    old = tmp_path / "runs" / "x" / "20260101_000000"
    RunRecord(old).start()
    (old / "checkpoints").mkdir()
    ckpt = old / "checkpoints" / "last.ckpt"
    ckpt.touch()
    assert run_dir_of(ckpt) == old
    assert run_dir(str(tmp_path / "runs" / "x" / "new"), str(ckpt)) == str(old)
    assert run_dir(str(tmp_path / "runs" / "x" / "new"), None) == str(tmp_path / "runs" / "x" / "new")


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
