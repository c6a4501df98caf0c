"""The training app end to end through the real CLI: run dir layout, modes, resume, concurrent runs, signals."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import FAST, read_json, run_cli, run_dirs
from faults import FAULT, assert_strictly_increasing, children, install_slow, snapshot, tensorboard_steps

pytestmark = pytest.mark.slow  # real training runs through the CLI (the fast tier is -m "not slow")


def test_default_run_writes_a_complete_run_dir(workdir: Path):
    proc = run_cli([], workdir)
    (run_dir,) = run_dirs(workdir / "runs")
    assert run_dir.parent == workdir / "runs" / "default"
    assert re.fullmatch(r"\d{8}_\d{6}", run_dir.name)
    assert f"run dir {run_dir}" in proc.stdout + proc.stderr
    assert re.search(r"val/acc = 0\.\d{4}", proc.stdout + proc.stderr)
    assert "it/s" not in proc.stdout + proc.stderr  # callbacks.progress_bar=null: no bar, not Lightning's own

    config = yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text())
    assert config["trainer"]["max_steps"] == 6
    assert (run_dir / ".hydra" / "overrides.yaml").is_file()
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert (run_dir / "checkpoints" / "best.ckpt").is_file()
    assert list(run_dir.glob("events.out.tfevents.*"))

    status = read_json(run_dir / "status.json")
    assert status["state"] == "completed" and status["restarts"] == 0
    assert status["attempts"][0]["nodes"] == [socket.gethostname()] and status["attempts"][0]["world_size"] == 1
    metrics = read_json(run_dir / "metrics.json")
    assert metrics["objective"]["name"] == "val/acc"
    assert 0.0 <= metrics["objective"]["value"] <= 1.0
    assert metrics["global_step"] == 6
    assert "train/loss_fixmatch" in metrics["final"]


def test_tensorboard_has_per_head_losses_accuracy_lr_and_images(workdir: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_cli(["callbacks.images.every_n_steps=3"], workdir)
    (run_dir,) = run_dirs(workdir)
    events = EventAccumulator(str(run_dir)).Reload()
    scalars = set(events.Tags()["scalars"])
    assert {"train/loss", "train/loss_supervised", "train/loss_fixmatch", "val/acc", "val/loss"} <= scalars
    assert {"lr/decay", "lr/no_decay"} <= scalars and "epoch" not in scalars
    assert {"views/unlabeled/weak", "views/unlabeled/strong", "views/labeled/weak"} <= set(events.Tags()["images"])


def test_resume_continues_in_the_same_run_dir_and_curve(workdir: Path):
    run_cli(["lr_scheduler=fixmatch_cosine"], workdir)  # ends at 0.2 lr: more steps still learn (cosine ends at 0)
    (run_dir,) = run_dirs(workdir)
    run_cli([f"run.resume={run_dir}", "trainer.max_steps=12"], workdir)
    assert run_dirs(workdir) == [run_dir]
    status = read_json(run_dir / "status.json")
    assert status["state"] == "completed" and status["restarts"] == 1
    assert read_json(run_dir / "metrics.json")["global_step"] == 12

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    steps = [e.step for e in EventAccumulator(str(run_dir)).Reload().Scalars("val/acc")]
    assert steps == sorted(steps) and max(steps) >= 11 and min(steps) <= 3


def test_validate_and_test_modes_evaluate_a_checkpoint(workdir: Path):
    run_cli([], workdir)
    (run_dir,) = run_dirs(workdir)
    best = run_dir / "checkpoints" / "best.ckpt"
    expected = read_json(run_dir / "metrics.json")["objective"]["value"]
    for mode in ("validate", "test"):
        # digits has no test set of its own: test mode evaluates its validation split given as data.test
        run_cli([f"run.mode={mode}", f"run.checkpoint={best}", f"run.id={mode}", "data.test=${data.val}"], workdir)
        (eval_dir,) = run_dirs(workdir / "runs" / mode)
        metrics = read_json(eval_dir / "metrics.json")
        stage = "val" if mode == "validate" else "test"
        assert abs(metrics[mode][f"{stage}/acc"] - expected) < 1e-6  # digits' val and test set are the same split
        assert read_json(eval_dir / "status.json")["state"] == "completed"


def test_pretrained_checkpoint_initialises_weights_only(workdir: Path):
    run_cli(["trainer.max_steps=3"], workdir)
    (first,) = run_dirs(workdir)
    ckpt = first / "checkpoints" / "last.ckpt"
    args = [f"run.pretrained_checkpoint={ckpt}", "run.id=finetune", "trainer.max_steps=3", "optimizer.lr=1e-12"]
    run_cli(args, workdir)  # (lr=0 is refused as a config error)
    (second,) = run_dirs(workdir / "runs" / "finetune")
    assert read_json(second / "metrics.json")["global_step"] == 3  # starts at step 0, not 3
    a = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
    b = torch.load(second / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    key = "model.backbone.features.0.0.weight"
    torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-9)  # lr=1e-12: the loaded weights are kept


def test_two_runs_started_together_never_share_a_dir(workdir: Path):
    cmd = [sys.executable, "-m", "sesemi.train", *FAST, "trainer.max_steps=2"]
    procs = [subprocess.Popen(cmd, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for _ in range(3)]
    for proc in procs:
        assert proc.wait(timeout=300) == 0, proc.stdout.read().decode()[-3000:]
    dirs = run_dirs(workdir)
    assert len(dirs) == 3
    assert all(read_json(d / "status.json")["state"] == "completed" for d in dirs)


def test_multirun_jobs_get_their_own_run_dirs_below_the_sweep_dir(workdir: Path):
    run_cli(["-m", "optimizer.lr=0.01,0.1", "run.id=lr_scan"], workdir)
    dirs = run_dirs(workdir / "runs" / "lr_scan")
    assert [d.name for d in dirs] == ["0", "1"]
    assert dirs[0].parent == dirs[1].parent and re.fullmatch(r"\d{8}_\d{6}", dirs[0].parent.name)
    lrs = [yaml.safe_load((d / ".hydra" / "config.yaml").read_text())["optimizer"]["lr"] for d in dirs]
    assert lrs == [0.01, 0.1]
    assert all(read_json(d / "status.json")["state"] == "completed" for d in dirs)


def _start(workdir: Path, *args: str) -> subprocess.Popen:
    """The CLI in its own process group, as a terminal starts it (Ctrl-C reaches the whole group)."""
    cmd = [sys.executable, "-m", "sesemi.train", *FAULT, *install_slow(workdir), *args]
    return subprocess.Popen(
        cmd, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )


def _signal_mid_training(workdir: Path, proc: subprocess.Popen, sig: signal.Signals, known: set[Path]) -> Path:
    """Once the run has a checkpoint and its loader workers run, send ``sig`` to its whole process group."""
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        new = [d for d in run_dirs(workdir) if d not in known]
        if new and (new[0] / "checkpoints" / "last.ckpt").is_file() and children(proc.pid):
            os.killpg(proc.pid, sig)  # the training process and its DataLoader workers, as a terminal or SLURM does
            return new[0]
        time.sleep(0.2)
    raise AssertionError(f"no checkpoint before the deadline:\n{proc.communicate()[0][-3000:]}")


@pytest.mark.slow
def test_sigterm_and_ctrl_c_checkpoint_at_the_step_record_the_signal_and_resume(workdir: Path):
    """Keeps the shipped data settings (2 loader workers, persistent), which the signals also reach."""
    stopped = {}
    for sig, state, code in ((signal.SIGTERM, "cancelled", 143), (signal.SIGINT, "interrupted", 130)):
        before = {d: snapshot(d) for d in run_dirs(workdir)}
        proc = _start(workdir, "trainer.max_steps=40", "trainer.val_check_interval=3")
        run_dir = _signal_mid_training(workdir, proc, sig, set(before))
        output = proc.communicate(timeout=240)[0]
        assert proc.returncode == code, output[-4000:]
        assert "DataLoader worker" not in output and "Traceback" not in output, output[-4000:]
        config = yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text())
        assert config["data"]["num_workers"] == 2 and config["data"]["persistent_workers"] is True
        status = read_json(run_dir / "status.json")
        assert status["state"] == state and status["signal"] == sig.name, status
        step = int(status["stop_reason"].split(" at step ")[1].split()[0])
        assert 3 <= step < 40
        ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
        assert ckpt["global_step"] == step  # saved at the end of the step the signal came in
        assert not (run_dir / "metrics.json").exists()
        assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
        assert {d: snapshot(d) for d in before} == before  # every other run dir unchanged
        stopped[sig] = run_dir

    run_dir = stopped[signal.SIGTERM]
    others = {d: snapshot(d) for d in run_dirs(workdir) if d != run_dir}
    resumed = run_cli([*FAULT, f"run.resume={run_dir}", "trainer.max_steps=40"], workdir, fast=False)
    assert run_dirs(workdir) == sorted([*others, run_dir]), resumed.stdout[-2000:]
    status = read_json(run_dir / "status.json")
    assert status["state"] == "completed" and status["restarts"] == 1
    assert status["attempts"][1]["previous_state"] == "cancelled"
    metrics = read_json(run_dir / "metrics.json")
    assert metrics["global_step"] == 40 and metrics["last_checkpoint"] == str(run_dir / "checkpoints" / "last.ckpt")
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    assert_strictly_increasing(tensorboard_steps(run_dir, "train/loss"), "train/loss")
    assert_strictly_increasing(tensorboard_steps(run_dir, "val/acc"), "val/acc")
    assert {d: snapshot(d) for d in others} == others
