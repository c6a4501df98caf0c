"""Synchronous Optuna sweeps through the real CLI on the default journal storage: trial dirs, resume, failures,
the objective check, the report and TensorBoard's hparams, all on tiny trials of the embedded digits."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from conftest import FAST, read_json, run_cli
from faults import FAULT, assert_each_step_once, install_slow
from optuna.trial import TrialState

from sesemi.sweep.report import build, render
from sesemi.sweep.storage import make_storage

pytestmark = pytest.mark.slow  # real training runs through the CLI (the fast tier is -m "not slow")

SWEEP = ["-m", "hparams_search=digits_fixmatch", "hydra.sweeper.n_jobs=1"]


def load(sweep_dir: Path) -> optuna.Study:
    info = json.loads((sweep_dir / "sweep.json").read_text())
    return optuna.load_study(study_name=info["study_name"], storage=make_storage(None, sweep_dir))


def output(proc) -> str:
    return proc.stdout + proc.stderr


def test_sync_sweep_on_journal_storage_resumes_without_touching_old_trials(workdir: Path):
    run_cli([*SWEEP, "hydra.sweeper.n_trials=2"], workdir)
    sweep = workdir / "runs" / "sweeps" / "digits_fixmatch"
    assert (sweep / "optuna.journal").is_file()
    trials = load(sweep).get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2
    for t in trials:
        run_dir = sweep / f"trial_{t.number:04d}"
        assert t.user_attrs["run_dir"] == str(run_dir)
        assert read_json(run_dir / "status.json")["state"] == "completed"
        assert read_json(run_dir / "metrics.json")["objective"]["value"] == t.value
        overrides = yaml.safe_load((run_dir / ".hydra" / "overrides.yaml").read_text())
        assert f"optimizer.lr={t.params['optimizer.lr']}" in overrides
        assert (
            yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text())["optimizer"]["lr"]
            == t.params["optimizer.lr"]
        )
    old = {p: p.read_bytes() for p in sweep.glob("trial_*/**/*") if p.is_file()}

    # The same command with a bigger budget resumes the study: 2 old trials count, 1 new one runs.
    proc = run_cli([*SWEEP, "hydra.sweeper.n_trials=3"], workdir)
    assert "2 of n_trials=3 trials exist (resumed), 1 to run" in output(proc)
    trials = load(sweep).get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3
    assert sorted(p.name for p in sweep.glob("trial_*")) == ["trial_0000", "trial_0001", "trial_0002"]
    assert all(p.read_bytes() == content for p, content in old.items()), "an old trial's files changed"
    assert [p.name for p in (workdir / "runs").iterdir()] == ["sweeps"]  # no stray timestamped dirs

    # The report: table, best trial and its checkpoint, CSV and plots.
    proc = run_cli([str(sweep)], workdir, fast=False, module="sesemi.sweep_report")
    text = proc.stdout
    assert "study digits_fixmatch (val/acc, maximize): 3 trials, 3 complete" in text
    for t in trials:
        assert re.search(
            rf"^{t.number}\s+COMPLETE\s+{t.value:.4g}\s+\d+s\s.*trial_{t.number:04d}", text, re.MULTILINE
        ), text
    best = max(trials, key=lambda t: t.value)
    assert f"best: trial {best.number}, val/acc = {best.value:.5g}" in text
    checkpoint = re.search(r"checkpoint: (\S+)", text).group(1)
    assert checkpoint == str(sweep / f"trial_{best.number:04d}" / "checkpoints" / "best.ckpt")
    assert Path(checkpoint).is_file()
    report = sweep / "report"
    with open(report / "trials.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["trial"]) for r in rows] == [0, 1, 2]
    assert {"state", "value", "duration_s", "optimizer.lr", "model.backbone.width", "run_dir"} <= set(rows[0])
    for name in ("optimization_history", "param_importances", "parallel_coordinate"):
        html = (report / f"{name}.html").read_text()
        assert "plotly.min.js" in html and len(html) > 1000
    assert (report / "plotly.min.js").is_file()

    # TensorBoard's HParams dashboard: each trial's event file holds its config (the sampled parameters in it).
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    events = EventAccumulator(str(sweep / "trial_0002"))
    events.Reload()
    content = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    hparams = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
    assert hparams["optimizer.lr"].number_value == trials[2].params["optimizer.lr"]


def test_crashing_trial_is_recorded_failed_and_the_sweep_goes_on(workdir: Path):
    # No hparams_search: the sweeper on its own, a grid over a width that cannot work.
    run_cli(
        [
            "-m",
            "hydra/sweeper=optuna_sync",
            "hydra/sweeper/sampler=grid",
            "model.backbone.width=choice(16,-8)",
            "hydra.sweeper.max_failure_rate=0.5",  # 1 failure of 2 trials is allowed; max_failure_rate=0 would stop
        ],
        workdir,
    )
    (sweep,) = [p.parent for p in (workdir / "runs").rglob("sweep.json")]
    trials = {t.params["model.backbone.width"]: t for t in load(sweep).get_trials()}
    assert trials[16].state == TrialState.COMPLETE
    failed = trials[-8]
    assert failed.state == TrialState.FAIL
    assert "negative dimension" in failed.user_attrs["error"]
    status = read_json(Path(failed.user_attrs["run_dir"]) / "status.json")
    assert status["state"] == "failed" and "negative dimension" in status["error"]
    report = render(build(str(sweep), plots=False))  # what `python -m sesemi.sweep_report` prints
    assert re.search(rf"^{failed.number}\s+FAIL\s.*negative dimension", report, re.MULTILINE), report


@pytest.mark.slow
def test_wrong_objective_stops_at_the_first_trial_and_costs_no_budget(workdir: Path):
    proc = run_cli([*SWEEP, "hydra.sweeper.n_trials=3", "run.objective=val/accuracy"], workdir, check=False)
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if line.startswith("sesemi: error:")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert (
        "run.objective: 'val/accuracy' is not logged by this run; its validation metrics are ['val/acc', 'val/loss']"
        in errors[0]
    )
    trials = load(workdir / "runs" / "sweeps" / "digits_fixmatch").get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.WAITING, TrialState.WAITING]
    assert "'val/accuracy' is not logged" in trials[0].user_attrs["error"]

    # Fixed, the same command runs the whole budget: the failed trial was not counted, nothing replays it.
    proc = run_cli([*SWEEP, "hydra.sweeper.n_trials=3"], workdir)
    assert "2 of n_trials=3 trials exist (resumed), 3 to run" in output(proc)
    trials = load(workdir / "runs" / "sweeps" / "digits_fixmatch").get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL] + [TrialState.COMPLETE] * 3


@pytest.mark.slow
def test_misspelt_search_space_key_stops_before_any_trial(workdir: Path):
    """One line naming the key, exit 2, no study, no trial; the corrected command then runs the whole budget."""
    args = [*SWEEP, "hydra.sweeper.n_trials=2"]
    proc = run_cli([*args, "optimizer.lrr=tag(log,interval(0.01,0.1))"], workdir, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("sesemi: error: optimizer.lrr: (swept by this sweep)")
    assert "Traceback" not in proc.stderr and not (workdir / "runs").exists()
    # A fixed override on the command line is Hydra's to check, before the sweeper starts.
    proc = run_cli([*SWEEP, "hydra.sweeper.n_trials=2", "method.loss_heads.fixmatch.wieght=2.0"], workdir, check=False)
    assert proc.returncode != 0 and "Key 'wieght' is not in struct" in proc.stderr
    assert "Traceback" not in proc.stderr and not (workdir / "runs").exists()

    run_cli([*args, "optimizer.lr=tag(log,interval(0.01,0.1))"], workdir)
    trials = load(workdir / "runs" / "sweeps" / "digits_fixmatch").get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2
    assert all(0.01 <= t.params["optimizer.lr"] <= 0.1 for t in trials)


def test_a_launcher_dry_run_leaves_no_study(workdir: Path):
    proc = run_cli(
        [*SWEEP, "hydra.sweeper.n_trials=2", "hydra/launcher=slurm_cpu", "hydra.launcher.dry_run=true"], workdir
    )
    assert "dry run, in memory" in output(proc)
    sweep = workdir / "runs" / "sweeps" / "digits_fixmatch"
    assert not (sweep / "optuna.journal").exists() and not (sweep / "sweep.json").exists()


def test_killed_sweep_resumes_and_continues_its_lost_trial(workdir: Path):
    """The sweep process dies mid-trial (a login node's session ends): the same command resumes the study, and the
    lost trial continues as itself, in its own dir, from its checkpoint (not a retry from scratch)."""
    args = [
        *SWEEP,
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.heartbeat_interval=1",
        "hydra.sweeper.grace_period=3",
        "trainer.max_steps=12",
        "callbacks.heartbeat.every_s=0",
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "sesemi.train", *FAST, *args],
        cwd=workdir,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    sweep = workdir / "runs" / "sweeps" / "digits_fixmatch"
    last = sweep / "trial_0000" / "checkpoints" / "last.ckpt"
    deadline = time.time() + 180
    while not last.is_file() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # the sweeper and the trial it runs in-process, after a checkpoint
    proc.wait()
    assert load(sweep).get_trials()[0].state == TrialState.RUNNING  # left behind
    stopped_at = read_json(sweep / "trial_0000" / "status.json")["progress"]["step"]

    proc = run_cli(args, workdir)
    assert "2 of n_trials=2 trials exist (resumed)" in output(proc)
    trials = load(sweep).get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.COMPLETE]  # the same two trials, no retry
    status = read_json(sweep / "trial_0000" / "status.json")
    assert status["state"] == "completed" and len(status["attempts"]) == 2
    assert status["attempts"][1]["resumed_from"].endswith("trial_0000/checkpoints/last.ckpt")
    assert 0 < stopped_at < 12 and read_json(sweep / "trial_0000" / "metrics.json")["global_step"] == 12
    attempts = trials[0].user_attrs["sesemi:attempts"]
    assert len(attempts) == 2 and attempts[1]["step"] >= 1  # the continuation started where the run had got to
    assert sorted(p.name for p in sweep.glob("trial_*")) == ["trial_0000", "trial_0001"]


def test_ctrl_c_stops_a_local_sweep_and_the_same_command_continues_the_trial(workdir: Path):
    """Ctrl-C (SIGINT to the terminal's process group) mid-trial: the trial checkpoints at the end of its step and
    its run says ``interrupted``; the sweep exits 130, the trial stays RUNNING in the study, and the same command
    continues it at once (no grace period: it said it stopped), as itself, from that checkpoint."""
    args = [*FAULT, *SWEEP, "hydra.sweeper.n_trials=2", "trainer.max_steps=12", *install_slow(workdir)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "sesemi.train", *args],
        cwd=workdir,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    sweep = workdir / "runs" / "sweeps" / "digits_fixmatch"
    last = sweep / "trial_0000" / "checkpoints" / "last.ckpt"
    deadline = time.time() + 180
    while not last.is_file() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGINT)  # as a terminal's Ctrl-C: the sweeper, its trial and the loader workers
    text = proc.communicate(timeout=120)[0]
    assert proc.returncode == 130, text[-4000:]
    trial, ticket = load(sweep).get_trials()
    assert trial.state == TrialState.RUNNING and trial.user_attrs["sesemi:stopped"].startswith("SIGINT at step")
    assert ticket.state == TrialState.WAITING  # the sweep stopped: it took no other trial
    status = read_json(sweep / "trial_0000" / "status.json")
    assert status["state"] == "interrupted" and status["signal"] == "SIGINT", status
    stopped_at = int(status["stop_reason"].split()[3])

    started = time.time()
    proc = run_cli(args, workdir, fast=False)
    assert "2 of n_trials=2 trials exist (resumed)" in output(proc)
    trials = load(sweep).get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.COMPLETE]  # the same trial, no retry
    status = read_json(sweep / "trial_0000" / "status.json")
    _, second = status["attempts"]
    assert status["state"] == "completed" and second["previous_state"] == "interrupted"
    assert second["resumed_from"] == str(last)
    assert 0 < stopped_at < 12 and read_json(sweep / "trial_0000" / "metrics.json")["global_step"] == 12
    attempts = trials[0].user_attrs["sesemi:attempts"]
    assert len(attempts) == 2 and attempts[1]["step"] == stopped_at and attempts[1]["at"] - started < 60
    assert sorted(trials[0].intermediate_values) == [3, 6, 9, 12]  # each validation once, across the attempts
    assert_each_step_once(sweep / "trial_0000", 12, val_every=3)
    assert sorted(p.name for p in sweep.glob("trial_*")) == ["trial_0000", "trial_0001"]
