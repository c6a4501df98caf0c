"""sesemi.rundir: what a run dir is (its checkpoints, its record, its state) and its lock, held by one training process
at a time (a forked child, a DataLoader worker, does not keep it after its trainer was killed; the two real CLI resumes
racing for a killed run are tests/test_kill_and_resume.py)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sesemi import rundir
from sesemi.errors import ConfigError
from sesemi.resolvers import claim_dir, run_dir
from sesemi.rundir import RunLock, RunRecord, RunState, read_status


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


HOLD = """
import os, sys, time
from sesemi.rundir import RunLock

assert RunLock(sys.argv[1]).acquire()
ready, running = os.pipe()
child = os.fork()  # as the loaders fork their workers, after the run dir was locked
if child == 0:
    os.write(running, b"1")  # the child runs: its at-fork handlers have run
    time.sleep(60)
    os._exit(0)
os.read(ready, 1)
print(os.getpid(), child, flush=True)
if sys.argv[2] == "die":
    os._exit(0)  # ends holding the lock, as after kill -9: no release
time.sleep(60)
"""


def _hold(run_dir: Path, then: str) -> tuple[subprocess.Popen, int, int]:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir), then], stdout=subprocess.PIPE, text=True)
    parent, child = (int(pid) for pid in proc.stdout.readline().split())
    return proc, parent, child


def test_a_forked_child_does_not_keep_the_lock_of_a_trainer_that_died(tmp_path: Path):
    proc, _, child = _hold(tmp_path, "die")
    try:
        proc.wait(timeout=30)
        assert Path(f"/proc/{child}").exists()  # the "worker" lives on (a real one: until its watchdog sees)
        lock = RunLock(tmp_path)
        assert lock.acquire()  # the run dir is free for the resume at once
        lock.release()
    finally:
        os.kill(child, signal.SIGKILL)


def test_a_second_process_is_refused_the_lock_until_its_holder_is_gone(tmp_path: Path):
    proc, parent, child = _hold(tmp_path, "live")
    try:
        assert not RunLock(tmp_path).acquire()  # the name of the holder: tests/test_bookkeeping.py
    finally:
        for pid in (child, parent):
            os.kill(pid, signal.SIGKILL)
        proc.wait(timeout=30)
    deadline = time.monotonic() + 10
    while not RunLock(tmp_path).acquire():  # the kernel lets go with the process
        assert time.monotonic() < deadline
        time.sleep(0.1)


def test_the_lock_is_re_entrant_within_a_process_and_freed_by_its_last_holder(tmp_path: Path):
    """A sweep worker that claims a lost trial's dir hands it on to the run it trains there: both hold it."""
    worker, run = RunLock(tmp_path), RunLock(tmp_path)
    assert worker.acquire() and run.acquire()
    probe = "import sys; from sesemi.rundir import RunLock; print(RunLock(sys.argv[1]).acquire())"
    other = [sys.executable, "-c", probe, str(tmp_path)]
    run.release()
    assert subprocess.run(other, capture_output=True, text=True, check=True).stdout.split() == ["False"]
    run.release()  # a second release of the same holder changes nothing
    assert subprocess.run(other, capture_output=True, text=True, check=True).stdout.split() == ["False"]
    worker.release()
    assert subprocess.run(other, capture_output=True, text=True, check=True).stdout.split() == ["True"]


def test_the_state_of_a_run_dir_is_its_records_in_the_one_vocabulary(tmp_path: Path):
    assert rundir.state_of(tmp_path) is None and not rundir.is_run_dir(tmp_path)  # no record yet
    record = RunRecord(tmp_path)
    record.start()
    assert rundir.state_of(tmp_path) is RunState.RUNNING and rundir.is_run_dir(tmp_path)
    record.stopped(RunState.INTERRUPTED, "SIGINT", "Ctrl-C")
    assert rundir.state_of(tmp_path) is RunState.INTERRUPTED and read_status(tmp_path)["signal"] == "SIGINT"
    record.requeued("time limit", "SIGUSR2")
    assert rundir.state_of(tmp_path) == "requeued"  # a str enum: the record's own word
    record.complete({"objective": {"value": 0.5}})
    assert rundir.state_of(tmp_path) is RunState.COMPLETED and rundir.read_objective(tmp_path) == 0.5
    assert str(RunState.LOST) == "lost" and RunState("pruned") is RunState.PRUNED
    assert rundir.DONE <= rundir.FINAL and rundir.ATTENTION <= rundir.FINAL and not rundir.LIVE & rundir.FINAL


def test_the_heartbeat_is_the_progress_one_else_the_last_update():
    assert rundir.last_heartbeat(None) is None
    assert rundir.last_heartbeat({"updated": "2026-01-01T12:00:00+00:00"}).hour == 12
    beat = {"progress": {"heartbeat": "2026-01-01T13:00:00+00:00"}, "updated": "2026-01-01T12:00:00+00:00"}
    assert rundir.last_heartbeat(beat).hour == 13
    assert rundir.last_heartbeat({"progress": {"heartbeat": "not a time"}, "updated": "2026-01-01T12:00:00"}).hour == 12


def test_an_array_task_is_its_own_slurm_job(monkeypatch: pytest.MonkeyPatch):
    for key in ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID"):
        monkeypatch.delenv(key, raising=False)
    assert rundir.slurm_job_id() is None
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    assert rundir.slurm_job_id() == "42"
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "40")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "2")
    assert rundir.slurm_job_id() == "40_2"
