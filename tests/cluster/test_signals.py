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
