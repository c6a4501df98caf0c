"""sesemi.cluster.signals through the real CLI: a run stopped by a signal and resumed logs every step of its curves
exactly once, with no hole at the step it stopped at, whether that step validated or not (loader workers on, as
users run)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import read_json, run_cli, run_dirs
from faults import FAULT, tensorboard_steps

pytestmark = pytest.mark.slow

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
