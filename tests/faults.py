"""Helpers of the fault tests (signals, requeue, cancel, resume): the defaults they keep, a slowed-down training,
TensorBoard's step axis, and snapshots of run dirs that must stay unchanged."""

from __future__ import annotations

import hashlib
import itertools
from pathlib import Path

from conftest import FAST

# FAST without `data.num_workers=0`: a fault test keeps the shipped data settings (loader workers on, persistent),
# since DataLoader workers receiving the signals is what these tests are about.
FAULT = [o for o in FAST if not o.startswith("data.num_workers")]
assert len(FAULT) == len(FAST) - 1

# Written into <launch dir>/src/ (run.src_dir): slows each training step down, so that a signal lands mid-training.
# On SLURM only the first attempt is slowed (SLURM_RESTART_COUNT unset or 0), so a requeued job finishes quickly;
# `+callbacks.slow.every_attempt=true` slows every attempt (a sweep trial that must span several time slots).
SLOW_SOURCE = """
import os, time
from pytorch_lightning.callbacks import Callback


class Slow(Callback):
    def __init__(self, seconds, every_attempt=False):
        self.seconds = float(seconds)
        self.every_attempt = bool(every_attempt)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.every_attempt or int(os.environ.get("SLURM_RESTART_COUNT") or 0) == 0:
            time.sleep(self.seconds)
"""


def install_slow(workdir: Path) -> list[str]:
    """The overrides of a training slowed down by ``+callbacks.slow.seconds`` per step (default 0.3 s)."""
    package = workdir / "src" / "sesemi_slow"
    package.mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text(SLOW_SOURCE)
    return ["+callbacks.slow._target_=sesemi_slow.Slow", "+callbacks.slow.seconds=0.3"]


def tensorboard_steps(run_dir: Path, tag: str) -> list[int]:
    """The steps of ``tag`` in the order they were written, over every event file of the run (one per attempt).

    Read file by file: TensorBoard's EventAccumulator drops "orphaned" steps after a restart and would hide the
    duplicates this is meant to find.
    """
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    steps = []
    for path in sorted(run_dir.glob("events.out.tfevents.*"), key=lambda p: p.stat().st_mtime):
        for event in EventFileLoader(str(path)).Load():
            if any(v.tag == tag for v in event.summary.value):
                steps.append(event.step)
    return steps


def tensorboard_view(run_dir: Path) -> dict[str, list[int]]:
    """The steps of every scalar tag as TensorBoard shows them: its EventAccumulator over the run dir's event files
    (one per attempt), with TensorBoard's purge of what an attempt's ``SessionLog.START`` (``purge_step``) or an
    out-of-order step hides, and every point kept (no reservoir sampling)."""
    from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator

    events = EventAccumulator(str(run_dir), size_guidance={SCALARS: 0}, purge_orphaned_data=True).Reload()
    return {tag: [e.step for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def assert_each_step_once(run_dir: Path, max_steps: int, val_every: int) -> dict[str, list[int]]:
    """Every scalar tag as TensorBoard shows it has each step at most once, in order; the training curves
    (``train/loss``, ``lr/*``: logged at every step, ``trainer.log_every_n_steps=1``) every step of the run and the
    validation curves every validation (``val_every`` steps and the last), with no gap. Returns the view."""
    view = tensorboard_view(run_dir)
    for tag, steps in view.items():
        assert steps == sorted(set(steps)), f"{tag}: a step twice or out of order: {steps}"
    validations = sorted({*range(val_every - 1, max_steps, val_every), max_steps - 1})
    for tag, steps in view.items():
        if tag == "train/loss" or tag.startswith("lr/"):
            assert steps == list(range(max_steps)), f"{tag}: {steps}"
        if tag.startswith("val/"):
            assert steps == validations, f"{tag}: {steps} (validations at {validations})"
    assert "train/loss" in view and "val/acc" in view, sorted(view)
    return view


def assert_strictly_increasing(steps: list[int], what: str) -> None:
    assert steps, f"no {what} logged"
    bad = [(a, b) for a, b in itertools.pairwise(steps) if b <= a]
    assert not bad, f"{what}: duplicate or backward steps {bad[:5]} in {steps}"


def snapshot(run_dir: Path) -> dict[str, str]:
    """Every file of a run dir with a hash of its content (to show it is left unchanged)."""
    return {
        str(p.relative_to(run_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(run_dir.rglob("*"))
        if p.is_file()
    }


def children(pid: int) -> list[int]:
    """The direct child processes of ``pid`` (Linux), e.g. a training process's DataLoader workers."""
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(c) for c in path.read_text().split()] if path.is_file() else []
