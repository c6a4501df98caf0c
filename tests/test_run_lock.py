"""The run dir's lock (``sesemi.rundir.RunLock``) belongs to the training process alone: a forked child (a DataLoader
worker) does not keep it after its trainer was killed, and a refusal names the process that holds it (issue 30,
item 10; the two real CLI resumes racing for a killed run are tests/test_kill_and_resume.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from sesemi.bookkeeping import _lock_holder
from sesemi.rundir import RunLock

HOLD = """
import os, sys, time
from sesemi.rundir import RunLock

assert RunLock(sys.argv[1]).acquire()
child = os.fork()  # as the loaders fork their workers, after the run dir was locked
if child == 0:
    time.sleep(60)
    os._exit(0)
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


def test_the_holder_of_a_lock_is_named_and_a_second_taker_refused(tmp_path: Path):
    proc, parent, child = _hold(tmp_path, "live")
    try:
        assert not RunLock(tmp_path).acquire()
        assert _lock_holder(tmp_path / ".lock") == parent
    finally:
        for pid in (child, parent):
            os.kill(pid, signal.SIGKILL)
        proc.wait(timeout=30)
    deadline = time.monotonic() + 10
    while not RunLock(tmp_path).acquire():  # the kernel lets go with the process
        assert time.monotonic() < deadline
        time.sleep(0.1)
