"""sesemi.bookkeeping: the run dir's record around a job (``recorded_run``), on real composed configs and real run dirs,
without training: running, then completed with its metrics, or failed with its traceback; a signal's stop passes
through; a run dir another process trains in is refused naming that process, and nothing in it changes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import compose_config
from omegaconf import OmegaConf

from sesemi.bookkeeping import recorded_run
from sesemi.errors import ConfigError
from sesemi.rundir import RunRecord, RunState, read_metrics, read_status, state_of
from sesemi.runtime import RunStopped, Runtime

HOLD = """
import sys, time
from sesemi.rundir import RunLock

assert RunLock(sys.argv[1]).acquire()
print("held", flush=True)
time.sleep(60)
"""


def test_a_run_is_running_inside_and_completed_with_its_metrics_after(tmp_path: Path):
    cfg = compose_config(tmp_path)
    with recorded_run(cfg, Runtime()) as run:
        assert state_of(tmp_path) is RunState.RUNNING
        assert run.start_step() is None and run.resume_from is None  # a fresh run starts from scratch
        run.complete({"global_step": 6, "objective": {"value": 0.5}})
    assert state_of(tmp_path) is RunState.COMPLETED and read_metrics(tmp_path)["global_step"] == 6
    probe = "import sys; from sesemi.rundir import RunLock; print(RunLock(sys.argv[1]).acquire())"
    held = subprocess.run([sys.executable, "-c", probe, str(tmp_path)], capture_output=True, text=True, check=True)
    assert held.stdout.split() == ["True"]  # released when the block ended


def test_an_error_marks_the_run_failed_with_its_traceback_and_is_raised(tmp_path: Path):
    cfg = compose_config(tmp_path)
    with pytest.raises(ZeroDivisionError), recorded_run(cfg, Runtime()):
        1 / 0  # noqa: B018 - the pipeline's error
    status = read_status(tmp_path)
    assert status["state"] == "failed" and status["error"].startswith("ZeroDivisionError")
    assert "1 / 0" in status["traceback"] and read_metrics(tmp_path) is None
    cfg = compose_config(tmp_path)
    with pytest.raises(ConfigError), recorded_run(cfg, Runtime()):
        raise ConfigError("data.root", "is missing", "give data.root=<folder>")
    assert read_status(tmp_path)["config_error"] == {
        "key": "data.root",
        "problem": "is missing",
        "fix": "give data.root=<folder>",
    }


def test_a_signals_stop_passes_through_with_the_state_its_handler_recorded(tmp_path: Path):
    cfg = compose_config(tmp_path)
    with pytest.raises(RunStopped), recorded_run(cfg, Runtime()):
        RunRecord(tmp_path).stopped(RunState.CANCELLED, "SIGTERM", "kill")
        raise RunStopped("SIGTERM", 143)
    assert state_of(tmp_path) is RunState.CANCELLED  # not failed


def test_a_run_dir_another_process_trains_in_is_refused_naming_it_and_left_as_it_was(tmp_path: Path):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        cfg = compose_config(tmp_path)
        refused = pytest.raises(ConfigError, match=rf"in use by another process now \(pid {holder.pid} on this host\)")
        with refused, recorded_run(cfg, Runtime()):
            pytest.fail("the block must not run")
        assert read_status(tmp_path) is None  # no record written
    finally:
        holder.kill()
        holder.wait(timeout=30)


def test_a_resume_with_no_step_left_is_refused_before_anything_changes(tmp_path: Path):
    record = RunRecord(tmp_path)
    record.start()
    record.complete({"global_step": 6})
    (tmp_path / "checkpoints").mkdir()
    torch.save({"state_dict": {}, "global_step": 6}, tmp_path / "checkpoints" / "last.ckpt")
    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(compose_config(tmp_path)))  # the run's own
    before = json.dumps(read_status(tmp_path), sort_keys=True)
    cfg = compose_config(tmp_path, [f"run.resume={tmp_path}"])
    with recorded_run(cfg, Runtime()) as run:
        assert run.resume_from == str(tmp_path / "checkpoints" / "last.ckpt")
        with pytest.raises(ConfigError, match=r"trainer\.max_steps: is 6, but the run already trained 6 steps"):
            run.start_step()
    assert json.dumps(read_status(tmp_path), sort_keys=True) == before  # a refused resume changes nothing
