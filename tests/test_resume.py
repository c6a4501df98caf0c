"""Resume: a run continues with its own config, the command line changes only what a continuation may change, a
refused or failed resume leaves the run byte-for-byte as it was, a running run cannot be resumed twice, and a
longer run stretches the learning-rate schedule without the LR ever going back up. Loader workers stay on."""

from __future__ import annotations

import itertools
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import read_json, run_cli, run_dirs
from faults import FAULT, install_slow, snapshot
from omegaconf import OmegaConf
from test_bad_files import override_in

from sesemi.builders import instantiate_key
from sesemi.resume import ScheduleLength

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "lr_scheduler"


def _error_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    (line,) = [line for line in proc.stderr.splitlines() if "error:" in line]
    return line


def _scalars(run_dir: Path, prefix: str) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir)).Reload()
    tags = [t for t in events.Tags()["scalars"] if t.startswith(prefix)]
    return {t: [(e.step, e.value) for e in events.Scalars(t)] for t in tags}


@pytest.fixture
def supervised_run(workdir: Path) -> Path:
    """A completed supervised run of 6 steps whose schedule (fixmatch_cosine) ends at about 0.2 * lr."""
    run_cli([*FAULT, "method=supervised", "lr_scheduler=fixmatch_cosine"], workdir, fast=False)
    (run_dir,) = run_dirs(workdir)
    return run_dir


@pytest.mark.slow
def test_resume_keeps_the_runs_own_config_and_refuses_other_changes(workdir: Path, supervised_run: Path):
    before = snapshot(workdir)
    for args, key in [
        (["model=resnet18_cifar"], "model"),
        (["method=fixmatch"], "method"),
        (["optimizer.lr=0.1"], "optimizer.lr"),
    ]:
        proc = run_cli([f"run.resume={supervised_run}", *args], workdir, fast=False, check=False)
        line = _error_line(proc)
        assert line.startswith(f"sesemi: error: {key}: cannot change when resuming a run"), line
        assert "run.pretrained_checkpoint" in line
        assert snapshot(workdir) == before  # the run it points at is byte-for-byte unchanged
    # The command line says nothing of the method: the run continues as the supervised run it is.
    run_cli([f"run.resume={supervised_run}", "trainer.max_steps=12"], workdir, fast=False)
    assert run_dirs(workdir) == [supervised_run]
    after = snapshot(workdir)
    first_config = {k: v for k, v in before.items() if "/.hydra/" in k}
    assert {k: after[k] for k in first_config} == first_config  # the first attempt's .hydra/*.yaml stay
    status = read_json(supervised_run / "status.json")
    assert status["state"] == "completed" and len(status["attempts"]) == 2
    attempt = status["attempts"][-1]
    assert "trainer.max_steps=12" in attempt["overrides"] and attempt["changed"]["trainer.max_steps"] == 12
    assert attempt["resumed_from"].endswith("last.ckpt")
    assert read_json(supervised_run / "metrics.json")["global_step"] == 12
    losses = _scalars(supervised_run, "train/loss_")
    assert set(losses) == {"train/loss_supervised"}, set(losses)  # no FixMatch from today's defaults
    lr = _scalars(supervised_run, "lr/")["lr/decay"]
    by_step = dict(lr)  # a step logged by both attempts (the one the second resumed at) keeps one value
    assert max(by_step) == 11
    values = [by_step[step] for step in sorted(by_step)]
    assert all(b <= a + 1e-12 for a, b in itertools.pairwise(values)), lr  # never back up


@pytest.mark.slow
def test_a_corrupt_checkpoint_leaves_the_run_unchanged(workdir: Path, supervised_run: Path):
    ckpt = supervised_run / "checkpoints" / "last.ckpt"
    ckpt.write_bytes(ckpt.read_bytes()[:1000])
    before = snapshot(workdir)
    proc = run_cli([f"run.resume={supervised_run}", "trainer.max_steps=12"], workdir, fast=False, check=False)
    line = _error_line(proc)
    assert line.startswith("sesemi: error: run.resume: cannot load") and "last.ckpt" in line, line
    assert "status completed" in proc.stderr
    assert snapshot(workdir) == before


@pytest.mark.slow
def test_a_finished_cosine_schedule_is_not_extended_at_lr_zero(workdir: Path):
    # lr_scheduler=cosine ends at lr 0; one validation, at the end, so that last.ckpt is the final state (Lightning
    # writes last.ckpt only along with a new best one)
    run_cli([*FAULT, "trainer.val_check_interval=6"], workdir, fast=False)
    (run_dir,) = run_dirs(workdir)
    before = snapshot(workdir)
    proc = run_cli([f"run.resume={run_dir}", "trainer.max_steps=12"], workdir, fast=False, check=False)
    line = _error_line(proc)
    assert line.startswith("sesemi: error: trainer.max_steps: asks for steps 7..12") and "already ended at 0" in line
    assert "run.pretrained_checkpoint=" in line
    assert snapshot(workdir) == before


@pytest.mark.slow
def test_a_running_run_cannot_be_resumed_twice(workdir: Path):
    args = [*FAULT, "trainer.max_steps=400", *install_slow(workdir)]
    cmd = [sys.executable, "-m", "sesemi.train", *args]
    proc = subprocess.Popen(cmd, cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (dirs := run_dirs(workdir)) or read_json(dirs[0] / "status.json").get("state") != "running":
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.5)
        second = run_cli([f"run.resume={dirs[0]}"], workdir, fast=False, check=False)
        line = _error_line(second)
        assert line.startswith("sesemi: error: run.resume:") and f"pid {proc.pid} on this host" in line, line
        assert len(read_json(dirs[0] / "status.json")["attempts"]) == 1
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)


@pytest.mark.parametrize("config", sorted(p.stem for p in CONFIGS.glob("*.yaml")))
@pytest.mark.parametrize("stop_at", [10, 20])  # mid-run (cancelled) and at the end (completed)
def test_a_longer_run_stretches_each_builtin_schedule_without_raising_the_lr(config: str, stop_at: int):
    """Each built-in schedule of 20 steps, saved at ``stop_at`` and resumed with max_steps=60 as Lightning does:
    the LR never goes back up, and a schedule with a length ends its decay at step 60."""
    node = OmegaConf.load(CONFIGS / f"{config}.yaml")
    node = OmegaConf.merge({"trainer": {"max_steps": 20}}, {"s": node}) if "max_steps" in str(node) else {"s": node}

    def schedule(steps: int):
        cfg = OmegaConf.merge(node, {"trainer": {"max_steps": steps}})
        weight = torch.zeros(1, requires_grad=True)
        optimizer = torch.optim.SGD([weight], lr=0.03)
        return optimizer, instantiate_key(cfg, "s")(optimizer)

    optimizer, scheduler = schedule(20)
    lrs = []
    for _ in range(stop_at):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    checkpoint = {
        "sesemi_config": {"trainer": {"max_steps": 20}},
        "optimizer_states": [optimizer.state_dict()],
        "lr_schedulers": [scheduler.state_dict()],
    }
    ScheduleLength().on_load_checkpoint(SimpleNamespace(max_steps=60), None, checkpoint)
    optimizer, scheduler = schedule(60)
    optimizer.load_state_dict(checkpoint["optimizer_states"][0])
    scheduler.load_state_dict(checkpoint["lr_schedulers"][0])
    for _ in range(stop_at, 61):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert all(b <= a + 1e-12 for a, b in itertools.pairwise(lrs)), lrs
    if config == "cosine":  # ends at eta_min at the new last step (from the mid-run LR) or stays at its end (0)
        assert lrs[-1] < 1e-9 and (stop_at == 20 or lrs[40] > 1e-3)
    if config == "fixmatch_cosine":  # keeps decaying to the new last step
        assert lrs[-1] < lrs[40] < lrs[stop_at]


def test_a_run_beating_on_another_host_cannot_be_resumed_until_its_heartbeat_is_stale(tmp_path: Path):
    """A SLURM job on another node: its pid means nothing here, its heartbeat in status.json does."""
    import json
    from datetime import datetime, timedelta, timezone

    from sesemi.errors import ConfigError
    from sesemi.resume import check_not_running

    def status(beat_age_s: float) -> None:
        beat = (datetime.now(timezone.utc) - timedelta(seconds=beat_age_s)).isoformat(timespec="seconds")
        record = {
            "state": "running",
            "attempts": [{"host": "node-elsewhere", "pid": 1}],
            "progress": {"heartbeat": beat},
        }
        (tmp_path / "status.json").write_text(json.dumps(record))

    status(5)
    with pytest.raises(ConfigError, match="running now on node-elsewhere"):
        check_not_running(tmp_path)
    status(600)  # silent for 10 minutes: killed without a status update
    check_not_running(tmp_path)


@pytest.mark.slow
def test_a_run_resumed_inside_its_supervised_warm_up_finishes_it_with_loader_workers_on(workdir: Path):
    """FixMatch off until step 8 (``start_step``), the run ended at step 4 and resumed to 12 with the shipped two
    persistent loader workers: the unlabeled loss starts at step 8 exactly, every step is logged once."""
    warm_up = [*FAULT, "method=fixmatch", "method.loss_heads.fixmatch.start_step=8", "lr_scheduler=fixmatch_cosine"]
    run_cli([*warm_up, "trainer.max_steps=4", "trainer.val_check_interval=2"], workdir, fast=False)  # last.ckpt at 4
    (run_dir,) = run_dirs(workdir)
    config = (run_dir / ".hydra" / "config.yaml").read_text()
    assert "num_workers: 2" in config and "persistent_workers: true" in config  # the loaders users run
    run_cli([f"run.resume={run_dir}", "trainer.max_steps=12"], workdir, fast=False)
    scalars = _scalars(run_dir, "train/loss")
    assert [step for step, _ in scalars["train/loss_supervised"]] == list(range(12))
    assert [step for step, _ in scalars["train/loss_fixmatch"]] == list(range(8, 12))
    status = read_json(run_dir / "status.json")
    assert status["state"] == "completed" and len(status["attempts"]) == 2
    assert read_json(run_dir / "metrics.json")["global_step"] == 12


@pytest.mark.slow
def test_a_resumed_flexmatch_run_keeps_its_per_sample_pool_state(workdir: Path):
    """FlexMatch's latest confident prediction per unlabeled sample is sized from the data when training starts and
    restored from last.ckpt on resume (Lightning restores before training starts): no entry recorded before the
    resume is lost after it. Loader workers on, as users run."""
    flexmatch = [
        *FAULT,
        "method=flexmatch",
        "method.loss_heads.flexmatch.threshold=0.15",
        "lr_scheduler=fixmatch_cosine",
    ]
    run_cli([*flexmatch, "trainer.max_steps=4", "trainer.val_check_interval=2"], workdir, fast=False)
    (run_dir,) = run_dirs(workdir)
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    key = "loss_heads.flexmatch.pool_predictions"
    before = torch.load(ckpt, weights_only=False)["state_dict"][key]
    assert (before >= 0).any() and (before == -1).any()
    run_cli([f"run.resume={run_dir}", "trainer.max_steps=8"], workdir, fast=False)
    after = torch.load(ckpt, weights_only=False)["state_dict"][key]
    assert read_json(run_dir / "metrics.json")["global_step"] == 8
    assert after.shape == before.shape  # the unlabeled pool of the digits split, sized once
    assert ((after >= 0) | (before == -1)).all() and (after >= 0).sum() > (before >= 0).sum()


def _final_lines(proc: subprocess.CompletedProcess) -> list[str]:
    return [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("sesemi: ")]


@pytest.mark.slow
def test_a_copied_run_keeps_its_best_and_a_resume_with_no_steps_left_changes_nothing(workdir: Path):
    """Issue 30, items 6-8. A completed run and a copy of its run dir: resumed with no step left, each is one error
    line naming trainer.max_steps and leaves every file as it was (the copy stays completed); the copy resumed with
    the printed fix keeps the best score its checkpoints record (Lightning forgot it when the checkpoints' dirpath
    changed, and a worse model overwrote best.ckpt) and says what the run is: its own method and seed."""
    run_cli([*FAULT, "method=supervised", "lr_scheduler=fixmatch_cosine", "run.seed=3"], workdir, fast=False)
    (original,) = run_dirs(workdir)
    copy = workdir / "elsewhere" / "copied" / original.name
    shutil.copytree(original, copy)
    for run_dir in (original, copy):
        before = snapshot(workdir)
        proc = run_cli([f"run.resume={run_dir}"], workdir, fast=False, check=False)
        line = _error_line(proc)
        assert line.startswith("sesemi: error: trainer.max_steps: is 6, but the run already trained 6 steps"), line
        assert f"run dir (status completed): {run_dir}" in proc.stderr
        assert snapshot(workdir) == before  # byte for byte: no attempt, no metrics, the copy still completed
    fix = line.split(". Fix: ", 1)[1]
    # The copy's best: a score no validation of 6 more steps reaches, so that keeping it is what the test sees.
    last = copy / "checkpoints" / "last.ckpt"
    state = torch.load(last, map_location="cpu", weights_only=False)
    (key,) = [k for k, v in state["callbacks"].items() if v.get("monitor") == "val/acc"]
    assert state["callbacks"][key]["dirpath"] == str(original / "checkpoints")  # where it was saved
    best = state["callbacks"][key]
    best["best_model_score"] = best["kth_value"] = best["current_score"] = torch.tensor(0.99)
    best["best_k_models"] = dict.fromkeys(best["best_k_models"], torch.tensor(0.99))
    torch.save(state, last)
    original_files, best_bytes = snapshot(original), (copy / "checkpoints" / "best.ckpt").read_bytes()

    proc = run_cli([f"run.resume={copy}", override_in(fix, "trainer.max_steps")], workdir, fast=False)
    metrics = read_json(copy / "metrics.json")
    assert metrics["global_step"] == 12 and metrics["objective"]["value"] == pytest.approx(0.99), metrics
    assert metrics["best_checkpoint"] == str(copy / "checkpoints" / "best.ckpt")
    assert metrics["last_checkpoint"] == str(copy / "checkpoints" / "last.ckpt")
    assert (copy / "checkpoints" / "best.ckpt").read_bytes() == best_bytes  # no worse model written over it
    assert sorted(p.name for p in (copy / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    assert snapshot(original) == original_files  # the copy never writes into the run it was copied from
    status = read_json(copy / "status.json")
    assert status["state"] == "completed" and len(status["attempts"]) == 2
    lines = _final_lines(proc)
    assert any(
        line.startswith("sesemi: trained method=supervised data=digits model=small_cnn, seed 3, in ") for line in lines
    ), lines
    assert "sesemi: stopped by max_steps at step 12 of 12" in lines
    assert "sesemi: done. val/acc = 0.9900 (best, max)" in lines
