"""Faults of a local run through the real CLI, with the shipped loader settings (2 persistent workers): ``kill -9``
after a checkpoint, two resumes of it started at once, and a second Ctrl-C (issue 30, items 8, 10, 11, 12).

After any fault TensorBoard shows each logged step exactly once: an attempt marks where its training starts
(``purge_step``), and TensorBoard hides what earlier attempts logged from there on."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import read_json, run_cli, run_dirs
from faults import FAULT, assert_each_step_once, children, install_slow, tensorboard_steps

pytestmark = pytest.mark.slow


def _slow(workdir: Path, seconds: float) -> list[str]:
    """install_slow's overrides with ``seconds`` per training step."""
    slow = install_slow(workdir)
    return [o if not o.startswith("+callbacks.slow.seconds=") else f"+callbacks.slow.seconds={seconds}" for o in slow]


# Written into <launch dir>/src/: 1 s before each training step, and 5 s at the first step start after a Ctrl-C came
# (the step's signal check comes after it), so that a second Ctrl-C lands before the first is acted on.
HOLD_SOURCE = """
import signal, time
from pytorch_lightning.callbacks import Callback
from sesemi.runtime import signal_received


class Hold(Callback):
    extended = False

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        end = time.monotonic() + 1.0
        while time.monotonic() < end:
            if signal_received(signal.SIGINT) and not self.extended:
                end, self.extended = time.monotonic() + 5.0, True
            time.sleep(0.02)
"""


def _start(workdir: Path, args: list[str]) -> subprocess.Popen:
    """The CLI in its own process group, as a terminal starts it."""
    return subprocess.Popen(
        [sys.executable, "-m", "sesemi.train", *args],
        cwd=workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def _wait_for(what: str, probe, proc: subprocess.Popen, timeout: float = 240):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        if proc.poll() is not None:
            raise AssertionError(f"the run ended before {what}:\n{proc.communicate()[1][-3000:]}")
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _checkpoint_step(run_dir: Path) -> int:
    return int(torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["global_step"])


def _error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if "error:" in line]


def test_a_killed_run_resumed_twice_at_once_trains_once_and_logs_each_step_once(workdir: Path):
    """A supervised run (seed 3, 30 steps, a validation and checkpoint every 10) gets ``kill -9`` a few steps after
    its checkpoint at step 10, having logged those steps. ``sesemi.status`` says lost; two resumes started together
    without overrides: one trains to step 30 (its summary says supervised, seed 3, step 30 of 30, not today's
    defaults), the other is one error line (exit 2). TensorBoard shows each step once."""
    args = [*FAULT, "method=supervised", "run.seed=3", "trainer.max_steps=30", "trainer.val_check_interval=10"]
    proc = _start(workdir, [*args, *_slow(workdir, 0.5)])
    try:
        run_dir = _wait_for("a run dir", lambda: next(iter(run_dirs(workdir)), None), proc)
        _wait_for("the checkpoint at step 10", lambda: (run_dir / "checkpoints" / "last.ckpt").is_file(), proc)
        # Steps logged after that checkpoint: a resume trains them again.
        _wait_for("steps 10-13 logged", lambda: max(tensorboard_steps(run_dir, "train/loss"), default=0) >= 13, proc)
        workers = children(proc.pid)
        assert workers, "no loader workers"
        os.kill(proc.pid, signal.SIGKILL)  # the training process alone, as `kill -9 <pid>` does
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert _checkpoint_step(run_dir) == 10
    assert read_json(run_dir / "status.json")["state"] == "running"  # nobody could say otherwise...
    status_cli = subprocess.run(
        [sys.executable, "-m", "sesemi.status", str(run_dir)], cwd=workdir, capture_output=True, text=True
    )
    assert " lost " in status_cli.stdout and " running " not in status_cli.stdout, status_cli.stdout  # ...but this

    # Two resumes at once, right after the kill (the loader workers may still be ending): the run's own config.
    resumes = [_start(workdir, [f"run.resume={run_dir}"]) for _ in range(2)]
    outputs = [p.communicate(timeout=600) for p in resumes]
    by_code = {p.returncode: output for p, output in zip(resumes, outputs)}
    assert sorted(by_code) == [0, 2], [(p.returncode, err[-3000:]) for p, (_, err) in zip(resumes, outputs)]
    out, refused = by_code[0][0], by_code[2][1]
    assert "Traceback" not in refused, refused[-3000:]
    (line,) = _error_lines(refused)
    assert line.startswith(f"sesemi: error: run.resume: {run_dir} is "), line
    assert "Fix: wait for it to end" in line, line
    assert not [w for w in workers if Path(f"/proc/{w}").exists()]  # the killed run's workers ended by themselves

    # The winner says what the run is, from its own config (not today's fixmatch, seed 0, 600 steps).
    lines = [ln for ln in out.splitlines() if ln.startswith("sesemi: ")]
    assert any(
        ln.startswith("sesemi: trained method=supervised data=digits model=small_cnn, seed 3, in") for ln in lines
    )
    assert "sesemi: stopped by max_steps at step 30 of 30" in lines, lines

    # One consistent run dir: the killed attempt and one resume.
    status = read_json(run_dir / "status.json")
    assert status["state"] == "completed" and len(status["attempts"]) == 2, status
    assert status["attempts"][1]["previous_state"] == "running"  # what the killed attempt left
    assert read_json(run_dir / "metrics.json")["global_step"] == 30
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    assert len(list(run_dir.glob("events.out.tfevents.*"))) == 2
    raw = tensorboard_steps(run_dir, "train/loss")
    assert len(raw) > len(set(raw)), raw  # steps 10-13 were written twice, once by each attempt...
    assert_each_step_once(run_dir, max_steps=30, val_every=10)  # ...and TensorBoard shows each once


def test_a_second_ctrl_c_ends_the_run_interrupted_at_once_and_it_resumes(workdir: Path):
    """Ctrl-C, then Ctrl-C again before the step ends: exit 130 at once, ``interrupted`` (before: ``failed`` with
    "SystemExit: 1" or a torch error), no traceback; ``run.resume`` continues from the last checkpoint and
    TensorBoard shows each step once."""
    package = workdir / "src" / "sesemi_hold"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(HOLD_SOURCE)
    hold = ["+callbacks.hold._target_=sesemi_hold.Hold"]
    proc = _start(workdir, [*FAULT, "trainer.max_steps=20", "trainer.val_check_interval=4", *hold])
    try:
        run_dir = _wait_for("a run dir", lambda: next(iter(run_dirs(workdir)), None), proc)
        _wait_for("a checkpoint", lambda: (run_dir / "checkpoints" / "last.ckpt").is_file(), proc)
        _wait_for("loader workers", lambda: children(proc.pid), proc)
        time.sleep(0.5)  # mid-step, past the checkpoint's validation
        os.killpg(proc.pid, signal.SIGINT)  # the whole process group, as a terminal's Ctrl-C
        # The second once the first was taken (two at once are one signal to a process busy in C code).
        _wait_for("the first Ctrl-C noted", lambda: "got SIGINT" in (run_dir / "train.log").read_text(), proc, 30)
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, (proc.returncode, err[-3000:])
    for text in ("Traceback", "SystemExit", "DataLoader worker", "unexpected pos"):
        assert text not in out + err, (out + err)[-3000:]
    status = read_json(run_dir / "status.json")
    assert status["state"] == "interrupted" and status["signal"] == "SIGINT", status
    assert "twice" in status["stop_reason"] and not status.get("error"), status
    assert not (run_dir / "metrics.json").exists()
    step = _checkpoint_step(run_dir)
    assert step > 0 and step % 4 == 0  # the last validation's checkpoint: none was written for the stop

    run_cli([f"run.resume={run_dir}"], workdir, fast=False)
    status = read_json(run_dir / "status.json")
    assert status["state"] == "completed" and status["attempts"][1]["previous_state"] == "interrupted"
    assert read_json(run_dir / "metrics.json")["global_step"] == 20
    assert_each_step_once(run_dir, max_steps=20, val_every=4)
