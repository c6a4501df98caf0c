"""sesemi.runtime: what the environment decided for one run (a plain local run by default), the registry of the
signals this process received, and the stop a signal ends a run with (not an error)."""

from __future__ import annotations

import contextlib
import subprocess
import sys

from sesemi.runtime import RunStopped, Runtime

# In a process of its own: a signal once noted stays noted for the rest of the process.
REGISTRY = """
import signal
from sesemi.runtime import note_signal, signal_received

assert not signal_received(signal.SIGTERM)
note_signal(signal.SIGTERM)
note_signal(int(signal.SIGUSR2))  # a handler's signum
assert signal_received(signal.SIGTERM) and signal_received(signal.SIGUSR2)
assert not signal_received(signal.SIGINT)
print("ok")
"""


def test_a_signal_noted_by_any_handler_is_received_for_the_rest_of_the_process():
    proc = subprocess.run([sys.executable, "-c", REGISTRY], capture_output=True, text=True, timeout=60)
    assert proc.stdout.split() == ["ok"], proc.stderr


def test_a_runtime_without_arguments_is_a_plain_local_run():
    runtime = Runtime()
    assert (runtime.strategy, runtime.plugins, runtime.callbacks, runtime.restart_checkpoint) == ("auto", [], [], None)
    assert isinstance(runtime.guard, contextlib.nullcontext)
    assert Runtime().callbacks is not runtime.callbacks  # each its own list


def test_a_stopped_run_ends_the_process_with_its_code_and_is_no_error():
    stop = RunStopped("SIGTERM at step 4 (terminated)", 143)
    assert isinstance(stop, SystemExit) and not isinstance(stop, Exception)
    assert (stop.code, stop.state, str(stop)) == (143, "cancelled", "SIGTERM at step 4 (terminated)")
    assert RunStopped("time limit", -1, "requeued").state == "requeued"
