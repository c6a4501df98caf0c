"""sesemi.cluster.signals: the handlers only note a signal, the requeueing one wins, a local run leaves submitit's
signal alone, a requeued SLURM job (an array task too) finds its own checkpoint; and through the real CLI, a run
stopped by a signal and resumed logs every step of its curves exactly once, with no hole at the step it stopped at,
whether that step validated or not (loader workers on, as users run)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import read_json, run_cli, run_dirs
from faults import FAULT, tensorboard_steps

from sesemi.cluster.signals import StopOnSignal, restart_checkpoint, submitit_signal
from sesemi.rundir import RunRecord, read_status

SLURM_VARS = ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SUBMITIT_EXECUTOR")

# Written into <launch dir>/src/: the training process sends itself SIGTERM at the end of a given step, as `kill`
# from outside would, at a step the test chooses.
SELF_TERM = """
import os, signal
from pytorch_lightning.callbacks import Callback


class SelfTerm(Callback):
    def __init__(self, at):
        self.at = int(at)

    def on_train_batch_end(self, trainer, *args):
        if trainer.global_step == self.at and not os.environ.get("SESEMI_TEST_NO_TERM"):
            os.kill(os.getpid(), signal.SIGTERM)
"""


@pytest.mark.slow
@pytest.mark.parametrize("at", [5, 8])  # validations at steps 4, 8 and 12: after a plain step, after a validation
def test_a_run_stopped_by_sigterm_and_resumed_logs_each_step_once(workdir: Path, at: int):
    (workdir / "src" / "selfterm").mkdir(parents=True)
    (workdir / "src" / "selfterm" / "__init__.py").write_text(SELF_TERM)
    args = [
        *FAULT,
        "trainer.max_steps=12",
        "trainer.val_check_interval=4",
        "+callbacks.term._target_=selfterm.SelfTerm",
    ]
    stopped = run_cli([*args, f"+callbacks.term.at={at}"], workdir, fast=False, check=False)
    assert stopped.returncode == 143, stopped.stderr[-3000:]
    (run_dir,) = run_dirs(workdir)
    status = read_json(run_dir / "status.json")
    assert status["state"] == "cancelled" and f"at step {at} " in status["stop_reason"]

    run_cli([f"run.resume={run_dir}"], workdir, fast=False, env={"SESEMI_TEST_NO_TERM": "1"})
    assert read_json(run_dir / "metrics.json")["global_step"] == 12
    assert tensorboard_steps(run_dir, "train/loss") == list(range(12))  # one point a step, none twice or missing
    assert tensorboard_steps(run_dir, "val/acc") == [3, 7, 11]


# Sends SIGTERM once, before the first step of an attempt, when SESEMI_TEST_TERM_FIRST is set.
SELF_TERM_FIRST = """
class SelfTermFirst(Callback):
    done = False

    def on_train_batch_start(self, trainer, *args):
        if not self.done and os.environ.get("SESEMI_TEST_TERM_FIRST"):
            self.done = True
            os.kill(os.getpid(), signal.SIGTERM)
"""


@pytest.mark.slow
def test_a_signal_before_an_attempts_first_step_saves_nothing_and_the_run_goes_on_from_where_it_was(workdir: Path):
    """A signal that stops an attempt before its first step (a requeued job or a sweep trial stopped while it
    started) saves no checkpoint: the state is the one the attempt started from. (A save there was restored by
    Lightning as one made mid-step, and the run logged every point after it one step late: seen on a sweep trial
    whose time limit came while it started.)"""
    (workdir / "src" / "selfterm").mkdir(parents=True)
    (workdir / "src" / "selfterm" / "__init__.py").write_text(SELF_TERM + SELF_TERM_FIRST)
    args = [
        *FAULT,
        "trainer.max_steps=12",
        "trainer.val_check_interval=4",
        "+callbacks.first._target_=selfterm.SelfTermFirst",
        "+callbacks.term._target_=selfterm.SelfTerm",
        "+callbacks.term.at=5",
    ]
    # A new run stopped before its first step: nothing to save, nothing to resume; the command runs again.
    (workdir / "new").mkdir()
    (workdir / "new" / "src").symlink_to(workdir / "src")
    stopped = run_cli(args, workdir / "new", fast=False, check=False, env={"SESEMI_TEST_TERM_FIRST": "1"})
    assert stopped.returncode == 143, stopped.stderr[-3000:]
    (run_dir,) = run_dirs(workdir / "new")
    status = read_json(run_dir / "status.json")
    assert status["state"] == "cancelled" and "at step 0 " in status["stop_reason"], status
    assert "nothing trained yet" in status["stop_reason"] and not (run_dir / "checkpoints" / "last.ckpt").exists()
    assert "run the command again" in stopped.stderr

    # A resumed attempt stopped before its first step keeps the checkpoint it started from, byte for byte.
    stopped = run_cli(args, workdir, fast=False, check=False)  # SIGTERM at the end of step 5
    assert stopped.returncode == 143, stopped.stderr[-3000:]
    (run_dir,) = run_dirs(workdir / "runs")
    last = run_dir / "checkpoints" / "last.ckpt"
    saved = last.read_bytes()
    env = {"SESEMI_TEST_NO_TERM": "1"}
    stopped = run_cli(
        [f"run.resume={run_dir}"], workdir, fast=False, check=False, env={**env, "SESEMI_TEST_TERM_FIRST": "1"}
    )
    assert stopped.returncode == 143, stopped.stderr[-3000:]
    status = read_json(run_dir / "status.json")
    assert "at step 5 " in status["stop_reason"] and "no step trained in this attempt" in status["stop_reason"]
    assert last.read_bytes() == saved

    run_cli([f"run.resume={run_dir}"], workdir, fast=False, env=env)
    assert read_json(run_dir / "metrics.json")["global_step"] == 12
    assert len(read_json(run_dir / "status.json")["attempts"]) == 3
    assert tensorboard_steps(run_dir, "train/loss") == list(range(12))  # one point a step, none late or missing
    assert tensorboard_steps(run_dir, "val/acc") == [3, 7, 11]


@pytest.fixture
def no_slurm(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in SLURM_VARS:
        monkeypatch.delenv(var, raising=False)


# In a process of its own: the signals it receives are noted for the rest of that process (sesemi.runtime).
NOTING = """
import json, signal, sys
from sesemi.cluster.signals import StopOnSignal, submitit_signal
from sesemi.sweep import stop

signals = (signal.SIGTERM, signal.SIGINT, submitit_signal())
before = {sig: signal.getsignal(sig) for sig in signals}
with StopOnSignal(sys.argv[1], slurm=True) as callback:
    owned = [getattr(signal.getsignal(sig), "__self__", None) is callback for sig in signals]
    noted_before = stop.received()
    for sig in (signal.SIGTERM, submitit_signal(), signal.SIGTERM):
        signal.raise_signal(sig)  # noted only: the process goes on
    received = callback.received.name
restored = [signal.getsignal(sig) == before[sig] for sig in signals]
print(json.dumps({"owned": owned, "noted_before": noted_before, "received": received,
                  "noted_after": stop.received(), "restored": restored}))
"""


def test_the_handlers_only_note_a_signal_and_the_requeueing_one_wins(tmp_path: Path):
    proc = subprocess.run([sys.executable, "-c", NOTING, str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = json.loads(proc.stdout.splitlines()[-1])
    assert seen["owned"] == [True, True, True] and seen["restored"] == [True, True, True]
    assert seen["received"] == submitit_signal().name  # submitit's requeues the job: it wins over SIGTERM
    # A sweep worker whose trial got SIGTERM before the trial's first step (the run's handler took it, not the
    # sweep's wrapper) still knows its job is ending: it takes no new trial.
    assert not seen["noted_before"] and seen["noted_after"]
    assert "got SIGTERM; checkpointing at the end of this step" in proc.stderr
    assert read_status(tmp_path) is None  # noting writes nothing; the stop at the next step does


def test_a_local_run_does_not_take_submitits_signal(tmp_path: Path):
    before = signal.getsignal(submitit_signal())
    interrupt = signal.getsignal(signal.SIGINT)  # whatever the process had: restored as it was
    with StopOnSignal(str(tmp_path)) as callback:
        assert signal.getsignal(submitit_signal()) == before
        assert getattr(signal.getsignal(signal.SIGINT), "__self__", None) is callback
    assert signal.getsignal(signal.SIGINT) == interrupt


def test_restart_checkpoint_only_for_the_same_slurm_job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_slurm):
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"x")
    (tmp_path / "status.json").write_text(json.dumps({"attempts": [{"slurm_job_id": "42_1"}]}))
    assert restart_checkpoint(tmp_path) is None  # not in a job
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")
    monkeypatch.setenv("SLURM_JOB_ID", "43")
    assert restart_checkpoint(tmp_path) is None  # another job: never resume someone else's run
    monkeypatch.setenv("SLURM_JOB_ID", "42_1")
    assert restart_checkpoint(tmp_path) == str(tmp_path / "checkpoints" / "last.ckpt")
    (tmp_path / "checkpoints" / "last.ckpt").unlink()
    assert restart_checkpoint(tmp_path) is None  # requeued before its first checkpoint: starts over


def test_an_array_task_is_recorded_and_recognised_as_its_own_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_slurm
):
    """One task of an array has the array's number as ``$SLURM_JOB_ID`` (``scontrol requeue`` of it requeues every
    task): the task is recorded as ``<array>_<task>`` and a requeue of it finds its own attempts under that name."""
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "42")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "1")
    RunRecord(tmp_path).start()
    assert read_status(tmp_path)["attempts"][0]["slurm_job_id"] == "42_1"
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"x")
    assert restart_checkpoint(tmp_path) == str(tmp_path / "checkpoints" / "last.ckpt")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "0")  # task 0 of the same array: another job's run dir
    assert restart_checkpoint(tmp_path) is None
