from pathlib import Path

from sesemi.resolvers import claim_dir, run_dir, run_dir_of
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
    assert run_dir_of(ckpt) == old
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
