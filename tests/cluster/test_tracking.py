"""A record never claims a live run by itself (issue 30, item 13): ``running`` is believed only while SLURM runs the
job, the attempt's process is alive on this host (the same process, not a newer one that got its pid), or another
host's heartbeat is fresh. The real full disk that leaves such a record is tests/test_disk_full.py."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone

import pytest

from sesemi.cluster.tracking import derive_state

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
