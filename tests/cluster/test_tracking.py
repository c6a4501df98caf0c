"""sesemi.cluster.tracking: the state a user sees of each job and trial, from its record and the scheduler, and the
rows of a sweep (its points, an async sweep's workers and trials with the jobs that ran them). A record never claims
a live run by itself (issue 30, item 13): ``running`` is believed only while SLURM runs the job, the attempt's process
is alive on this host (the same process, not a newer one that got its pid), or another host's heartbeat is fresh.
The real full disk that leaves such a record is tests/test_disk_full.py."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from cluster_testkit import fake_sweep

from sesemi import status
from sesemi.cluster.tracking import collect, derive_state

NOW = datetime.now(timezone.utc)


def _stamp(seconds_ago: float = 0.0) -> str:
    return (datetime.now(timezone.utc) - timedelta(seconds=seconds_ago)).isoformat(timespec="seconds")


def _record(pid: int | None, started: str, host: str | None = None, **fields) -> dict:
    attempt = {"host": host or socket.gethostname(), "pid": pid, "started": started, "slurm_job_id": None}
    return {"state": "running", "attempts": [attempt], "updated": started} | fields


def test_a_run_whose_process_is_alive_here_is_running_however_old_its_heartbeat():
    """A live process here is the proof (a long image check before training writes no heartbeat)."""
    record = _record(os.getpid(), _stamp(), updated=_stamp(3600), progress={"heartbeat": _stamp(3600)})
    assert derive_state(record, "", datetime.now(timezone.utc)) == "running"


def test_a_run_whose_process_is_gone_is_lost_however_fresh_its_heartbeat():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    record = _record(proc.pid, _stamp(), progress={"heartbeat": _stamp()})
    assert derive_state(record, "", datetime.now(timezone.utc)) == "lost"


def test_a_pid_the_kernel_gave_to_a_newer_process_is_not_the_run():
    """The attempt started an hour ago; the process with its pid now started a moment ago: not the run."""
    newer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        time.sleep(0.5)
        record = _record(newer.pid, _stamp(3600))
        assert derive_state(record, "", datetime.now(timezone.utc)) == "lost"
        record = _record(newer.pid, _stamp(-5))  # its own attempt (started after the process): alive
        assert derive_state(record, "", datetime.now(timezone.utc)) == "running"
    finally:
        newer.kill()
        newer.wait()


@pytest.mark.parametrize(
    ("beat_s", "expected"),
    [(5, "running"), (600, "lost"), (None, "lost")],  # None: a record without any time says nothing of a process
)
def test_another_hosts_run_is_judged_by_its_heartbeat(beat_s, expected):
    record = _record(1, _stamp(600), host="node-elsewhere")
    del record["updated"]
    if beat_s is not None:
        record["progress"] = {"heartbeat": _stamp(beat_s)}
    assert derive_state(record, "", datetime.now(timezone.utc)) == expected


def test_slurm_decides_for_its_jobs():
    record = _record(1, _stamp(600), host="node-elsewhere")
    record["attempts"][0]["slurm_job_id"] = "12_0"
    assert derive_state(record, "RUNNING", datetime.now(timezone.utc)) == "running"  # silent, but SLURM runs it
    # The attempt before a requeue that could not say so (killed, its node lost): the job waits for its next start.
    assert derive_state(record, "PENDING", datetime.now(timezone.utc)) == "requeued"
    assert derive_state(record, "NODE_FAIL", datetime.now(timezone.utc)) == "lost"


THEN = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)


def _fresh() -> str:  # a record's time stamp, written just now
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _beat(seconds_ago: float) -> dict:
    return {"progress": {"heartbeat": (THEN - timedelta(seconds=seconds_ago)).isoformat()}}


@pytest.mark.parametrize(
    ("record", "slurm", "expected"),
    [
        (None, "PENDING", "pending"),
        (None, "", "pending"),
        (None, "FAILED", "missing"),  # SLURM ended the job before it started training
        (None, "CANCELLED", "cancelled"),
        ({"state": "running", **_beat(5)}, "RUNNING", "running"),
        ({"state": "running", **_beat(5)}, "CANCELLED", "cancelled"),
        ({"state": "running", **_beat(5)}, "TIMEOUT", "lost"),  # the run never said it ended: lost
        ({"state": "running", **_beat(5)}, "NODE_FAIL", "lost"),
        ({"state": "running", **_beat(600)}, "", "lost"),  # no scheduler (local) and no heartbeat for 10 min
        ({"state": "running", **_beat(600)}, "RUNNING", "running"),  # SLURM runs it: slow, not lost
        ({"state": "requeued"}, "PENDING", "requeued"),
        ({"state": "completed"}, "COMPLETED", "completed"),
        ({"state": "failed"}, "COMPLETED", "failed"),  # the training raised; the batch script ended normally
        ({"state": "pruned"}, "RUNNING", "pruned"),  # an Optuna trial the pruner stopped (its worker runs on)
        ({"state": "failed", "retried_as": 7}, "RUNNING", "retried"),  # lost; trial 7 stands in for it
        ({"state": "requeued", "retried_as": 7}, "PENDING", "retried"),
    ],
)
def test_the_state_a_user_sees(record, slurm, expected):
    assert derive_state(record, slurm, THEN) == expected


def test_a_sweep_point_is_what_differs_between_its_jobs(tmp_path: Path):
    rows = collect(fake_sweep(tmp_path, ["completed", "running"]))
    assert [r.point for r in rows] == ["optimizer.lr=0.0", "optimizer.lr=0.1"]
    assert [(r.state, r.step, r.max_steps, r.objective) for r in rows] == [
        ("completed", 10, 10, 0.5),
        ("running", 5, 10, None),
    ]


def test_an_async_sweep_shows_its_workers_and_each_trial_with_the_job_that_ran_it(tmp_path: Path):
    sweep = tmp_path / "sweeps" / "study"
    jobs = []
    for k, (state, slurm_id) in enumerate([("running", "41"), ("completed", "42")]):
        worker = sweep / "workers" / "20260101_120000-1" / f"w{k}"
        worker.mkdir(parents=True)
        record = {"state": state, "attempts": [{"slurm_job_id": slurm_id}], "updated": _fresh()}
        (worker / "status.json").write_text(json.dumps(record))
        overrides = ["optimizer.momentum=0.9", f"hydra.sweep.subdir=workers/x/w{k}"]
        jobs.append({"num": k, "job_id": f"40_{k}", "run_dir": str(worker), "overrides": overrides})
    (sweep / "jobs.json").write_text(json.dumps({"executor": "local", "jobs": jobs}))
    trials = [("completed", "41", {}), ("pruned", "42", {}), ("failed", "41", {"retried_as": 3}), ("running", "41", {})]
    for number, (state, slurm_id, extra) in enumerate(trials):
        run_dir = sweep / f"trial_{number:04d}"
        (run_dir / ".hydra").mkdir(parents=True)
        attempts = [{"slurm_job_id": slurm_id}]
        (run_dir / "status.json").write_text(
            json.dumps({"state": state, "attempts": attempts, "updated": _fresh(), **extra})
        )
        overrides = f"- optimizer.lr=0.{number}\n- optimizer.momentum=0.9\n- hydra.sweep.subdir=trial_{number:04d}\n"
        (run_dir / ".hydra" / "overrides.yaml").write_text(overrides)
    rows = collect(sweep, use_sacct=False)
    table = [(r.name, r.point, r.job_id, r.state) for r in rows]
    assert table == [
        ("0", "", "40_0", "running"),
        ("1", "", "40_1", "completed"),
        ("trial_0000", "optimizer.lr=0.0", "40_0", "completed"),
        ("trial_0001", "optimizer.lr=0.1", "40_1", "pruned"),
        ("trial_0002", "optimizer.lr=0.2", "40_0", "retried"),
        ("trial_0003", "optimizer.lr=0.3", "40_0", "running"),
    ]
    assert all(not r.entry.get("job_id") for r in rows[2:])  # --resubmit leaves trials to the workers
    above = collect(tmp_path, use_sacct=False)  # from a dir above: the same rows, none twice, named by their dirs
    assert [r.name for r in above] == sorted(r.run_dir.relative_to(tmp_path).as_posix() for r in rows)
    assert {r.run_dir: replace(r, label="") for r in above} == {r.run_dir: r for r in rows}
    assert status.counts(rows) == "6 jobs: 2 completed, 1 pruned, 1 retried, 2 running"
