"""Sweep trials that SLURM stops, on the real test cluster, with loader workers on as users run: each trial continues
as itself from its own checkpoint (same number, same run dir, one more attempt), never restarts as a new trial.

- An asynchronous sweep (2 worker jobs, 4 trials) whose trials need more time than their slots hold
  (``hydra.launcher.timeout_min=2``: SLURM's early signal stops a worker, submitit requeues the job, and the
  requeued worker continues its own trial), with one worker ``kill -9``'d mid-trial (its trial continued by
  another worker) and one worker job requeued with ``scontrol requeue``, on the default journal storage.
- A synchronous sweep on PostgreSQL whose batch is preempted: one trial job requeued with ``scontrol requeue`` (the
  requeued job continues its trial), the other cancelled with ``scancel`` (the sweeper continues it in its next
  batch).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest
import yaml
from cluster_testkit import SLURM_SWEEP
from conftest import read_json, sacct
from faults import FAULT, assert_each_step_once, install_slow
from optuna.trial import FrozenTrial, TrialState

from sesemi.sweep.storage import make_storage

pytestmark = [
    pytest.mark.slow,
    pytest.mark.slurm,
    pytest.mark.skipif(shutil.which("sinfo") is None, reason="no SLURM client (scripts/slurm_cluster.sh start)"),
]

SLURM = [
    *SLURM_SWEEP,
    "hydra/sweeper/pruner=none",  # every trial must reach max_steps
    "hydra.sweeper.heartbeat_interval=2",
]
SWEEP_DIR = Path("runs/sweeps/digits_fixmatch")


def slowed(workdir: Path, seconds: float) -> list[str]:
    """Every training step of every attempt ``seconds`` longer (tests/faults.py), so that the steps a time slot
    trains are predictable on a loaded machine."""
    return [*install_slow(workdir)[:-1], f"+callbacks.slow.seconds={seconds}", "+callbacks.slow.every_attempt=true"]


def validation_steps(max_steps: int, every: int) -> list[int]:
    """The steps a trial reports its objective at (Optuna's intermediate values: the optimizer step after it)."""
    return sorted({*range(every, max_steps + 1, every), max_steps})


def load(storage: object, name: str = "digits_fixmatch") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=storage)


class Sweep:
    """The sweep command in the background (its output in ``sweep.log``), the study read while it runs."""

    def __init__(self, workdir: Path, args: list[str], storage: Callable[[], object], study: str, env=None) -> None:
        self.workdir, self.storage, self.study = workdir, storage, study
        self.dir = workdir / "runs" / "sweeps" / study
        self.log = (workdir / "sweep.log").open("w")
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sesemi.train", *FAULT, *args],
            cwd=workdir,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )

    def text(self) -> str:
        return (self.workdir / "sweep.log").read_text()

    def trials(self) -> list[FrozenTrial]:
        if not (self.dir / "sweep.json").is_file():
            return []
        try:
            return load(self.storage(), self.study).get_trials()
        except (KeyError, ValueError, OSError):
            return []

    def wait_for(self, what: str, find: Callable[[], object], timeout: float) -> object:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"the sweep ended before {what}:\n{self.text()[-4000:]}"
            found = find()
            if found:
                return found
            time.sleep(0.5)
        raise AssertionError(f"timed out waiting for {what}:\n{self.text()[-4000:]}")

    def wait(self, timeout: float) -> str:
        try:
            rc = self.proc.wait(timeout=max(1.0, timeout - (time.monotonic() - self.started)))
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"the sweep did not end in {timeout:.0f} s:\n{self.text()[-6000:]}") from None
        finally:
            self.log.close()
        text = self.text()
        assert rc == 0, f"the sweep exited {rc}:\n{text[-6000:]}"
        return text

    def cancel_jobs(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        jobs = self.dir / "jobs.json"
        ids = [j["job_id"] for j in read_json(jobs)["jobs"]] if jobs.is_file() else []
        if ids:
            subprocess.run(["scancel", *ids], capture_output=True, check=False)


def training(trial: FrozenTrial, *, min_step: int = 1) -> dict | None:
    """The run record of a trial whose current attempt trains (its process the one the study names), after a
    checkpoint; None otherwise."""
    run_dir = Path(trial.user_attrs.get("run_dir", "/nonexistent"))
    try:
        status = read_json(run_dir / "status.json")
    except (OSError, ValueError):
        return None
    attempt = (status.get("attempts") or [{}])[-1]
    step = (status.get("progress") or {}).get("step") or 0
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    live = status.get("state") == "running" and attempt.get("pid") == trial.user_attrs.get("pid")
    return status if live and ckpt.is_file() and step >= min_step else None


def check_continued(trial: FrozenTrial, sweep_dir: Path, max_steps: int, val_every: int) -> dict:
    """A trial that was stopped and continued: COMPLETE in its own run dir at ``max_steps``, every attempt in
    ``status.json`` and in its ``sesemi:attempts``, each step once in TensorBoard, each validation reported once to
    the study. Returns its status.json."""
    run_dir = sweep_dir / f"trial_{trial.number:04d}"
    assert trial.state == TrialState.COMPLETE, (trial.number, trial.state, trial.user_attrs.get("error"))
    assert trial.user_attrs["run_dir"] == str(run_dir)
    status = read_json(run_dir / "status.json")
    assert status["state"] == "completed", status
    metrics = read_json(run_dir / "metrics.json")
    assert metrics["global_step"] == max_steps and metrics["objective"]["value"] == trial.value
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    attempts = trial.user_attrs["sesemi:attempts"]
    assert len(attempts) == len(status["attempts"]), (attempts, status["attempts"])
    steps = [a["step"] for a in attempts]
    assert steps[1:] == sorted(steps[1:]) and all(s is not None for s in steps[1:]), steps  # each went further
    for attempt in status["attempts"][1:]:
        if attempt.get("resumed_from"):
            assert attempt["resumed_from"] == str(run_dir / "checkpoints" / "last.ckpt")
    assert_each_step_once(run_dir, max_steps, val_every)
    # The study's intermediate values: each validation of the whole curve once, across the attempts.
    assert sorted(trial.intermediate_values) == validation_steps(max_steps, val_every), trial.intermediate_values
    config = yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text())
    assert config["data"]["num_workers"] == 2 and config["data"]["persistent_workers"] is True  # loader workers on
    for name, value in trial.params.items():
        assert f"{name}={value}" in yaml.safe_load((run_dir / ".hydra" / "overrides.yaml").read_text())
    return status


# An asynchronous sweep whose trials span time slots. A worker job's time limit is 2 minutes and SLURM's early
# signal comes `signal_delay_s` before it (SLURM may send it up to a minute early, seen 3-48 s here): after the
# worker's start-up (20-30 s on a loaded 2-core machine) a slot trains at most about 95 s. The 4 trials' 80 steps
# at 3 s or more each, less the dozen steps trained before the kill and the requeue, are more than the two slots
# that follow them hold, on a machine of any speed: at least one time limit is met.
ASYNC_STEPS, ASYNC_VAL, ASYNC_STEP_S = 20, 4, 3.0
ASYNC = [
    *SLURM,
    "hydra/sweeper=optuna_async",
    "hydra.sweeper.workers=2",
    "hydra.sweeper.n_trials=4",
    "hydra.launcher.timeout_min=2",
    "hydra.launcher.signal_delay_s=30",
    "hydra.sweeper.grace_period=10",
    f"trainer.max_steps={ASYNC_STEPS}",
    f"trainer.val_check_interval={ASYNC_VAL}",
]


def test_async_trials_continue_across_time_limits_a_kill_and_a_requeue(tmp_path: Path):
    storage = make_storage(None, tmp_path / SWEEP_DIR)
    sweep = Sweep(tmp_path, [*ASYNC, *slowed(tmp_path, ASYNC_STEP_S)], lambda: storage, "digits_fixmatch")
    try:
        # kill -9 one worker's training process mid-trial (after its first checkpoint).
        def killable() -> FrozenTrial | None:
            return next((t for t in sweep.trials() if t.state == TrialState.RUNNING and training(t)), None)

        killed = sweep.wait_for("a trial training after a checkpoint", killable, timeout=300)
        killed_step = training(killed)["progress"]["step"]
        os.kill(killed.user_attrs["pid"], signal.SIGKILL)
        killed_at = time.time()
        killed_job = killed.user_attrs["slurm_job_id"]

        # scontrol requeue another worker's job, mid-trial too.
        def requeueable() -> FrozenTrial | None:
            for t in sweep.trials():
                if t.state == TrialState.RUNNING and t.user_attrs.get("slurm_job_id") != killed_job and training(t):
                    return t
            return None

        requeued = sweep.wait_for("another worker's trial training", requeueable, timeout=300)
        requeued_job = requeued.user_attrs["slurm_job_id"]
        subprocess.run(["scontrol", "requeue", requeued_job], check=True)
        text = sweep.wait(timeout=900)
    finally:
        sweep.cancel_jobs()
    print(f"sweep: {time.monotonic() - sweep.started:.0f} s")
    sweep_dir = tmp_path / SWEEP_DIR
    trials = load(storage).get_trials()
    # The budget, exactly: the 4 trials, none retried as a new trial, one run dir each.
    assert [t.number for t in trials] == [0, 1, 2, 3], [(t.number, t.state, t.user_attrs) for t in trials]
    assert sorted(p.name for p in sweep_dir.glob("trial_*")) == [f"trial_{n:04d}" for n in range(4)]
    statuses = {t.number: check_continued(t, sweep_dir, ASYNC_STEPS, ASYNC_VAL) for t in trials}
    for number, status in statuses.items():
        print(number, [(a.get("slurm_job_id"), a.get("previous_state")) for a in status["attempts"]])
    # Time limits: trials were requeued by their worker job (submitit, on SLURM's early signal) and continued.
    requeues = [a for s in statuses.values() for a in s["attempts"] if a.get("previous_state") == "requeued"]
    assert len(requeues) >= 2, statuses  # the scontrol requeue and a time limit at least

    # The killed trial: continued by another worker (the killed one's job ended) from its checkpoint.
    status = statuses[killed.number]
    after_kill = [a for a in status["attempts"] if a.get("started") and _stamp(a["started"]) > killed_at]
    assert after_kill and after_kill[0]["slurm_job_id"] != killed_job, status["attempts"]
    attempts = trials[killed.number].user_attrs["sesemi:attempts"]
    assert any(a["step"] is not None and a["step"] >= killed_step for a in attempts[1:]), (attempts, killed_step)
    dead = killed.user_attrs["worker"].split("@")[0]
    assert f"worker {dead} ended after" in text, text[-4000:]
    # The requeued worker job came back as a worker: its trial continued (by itself, or by the other worker).
    status = statuses[requeued.number]
    assert len(status["attempts"]) >= 2 and any(a.get("slurm_job_id") == requeued_job for a in status["attempts"])

    results = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    assert results["trials"] == {"COMPLETE": 4}
    # Every time slot ended with a requeue (or the worker's end), none at the time limit itself, also when the
    # early signal came after a trial's last step (the worker then takes no new trial in that slot): only the
    # killed worker's job failed.
    states = sacct([j["job_id"] for j in read_json(sweep_dir / "jobs.json")["jobs"]])
    assert states.pop(killed_job) == "FAILED" and set(states.values()) == {"COMPLETED"}, states


def _stamp(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso).timestamp()


# PostgreSQL (the local server of scripts/postgres.sh): the password from the environment, never in the URL.
PG_URL = "postgresql://sesemi@127.0.0.1:5432/sesemi_optuna"
PG_PASSWORD = "sesemi"
SYNC_STEPS, SYNC_VAL = 12, 4


@pytest.fixture
def postgres(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("PGPASSWORD", raising=False)
    monkeypatch.setenv("SESEMI_STORAGE_PASSWORD", PG_PASSWORD)
    try:
        storage = make_storage(PG_URL)
    except Exception as err:  # noqa: BLE001
        pytest.skip(f"no PostgreSQL server at {PG_URL} (scripts/postgres.sh start): {err}")
    monkeypatch.delenv("SESEMI_STORAGE_PASSWORD")
    return storage


@pytest.mark.postgres
def test_a_preempted_sync_batch_continues_each_trial_on_postgresql(tmp_path: Path, postgres):
    """A synchronous batch of 2 trial jobs, both stopped mid-training after a checkpoint: one by ``scontrol
    requeue`` (SLURM restarts the job, which continues its trial), the other by ``scancel`` (the sweeper continues
    it in its next batch, as a job of its own). Both complete as themselves: the same 2 trials and run dirs, every
    attempt recorded, no trial retried as a new one."""
    name = f"test_{uuid.uuid4().hex[:8]}"
    args = [
        *SLURM,
        "hydra.sweeper.n_jobs=2",
        "hydra.sweeper.n_trials=2",
        f"hydra.sweeper.storage='{PG_URL}'",
        f"hydra.sweeper.study_name={name}",
        "hydra.sweeper.grace_period=20",
        f"trainer.max_steps={SYNC_STEPS}",
        f"trainer.val_check_interval={SYNC_VAL}",
        *slowed(tmp_path, 1.0),
    ]
    sweep = Sweep(tmp_path, args, lambda: postgres, name, env={"SESEMI_STORAGE_PASSWORD": PG_PASSWORD})
    try:
        both = sweep.wait_for(
            "both trials training after a checkpoint",
            lambda: (lambda ts: ts if len(ts) == 2 else None)([t for t in sweep.trials() if training(t)]),
            timeout=300,
        )
        requeued, cancelled = sorted(both, key=lambda t: t.number)
        subprocess.run(["scontrol", "requeue", requeued.user_attrs["slurm_job_id"]], check=True)
        subprocess.run(["scancel", cancelled.user_attrs["slurm_job_id"]], check=True)
        stopped_at = time.time()
        text = sweep.wait(timeout=600)
        sweep_dir = sweep.dir
        trials = load(postgres, name).get_trials()
        assert [t.number for t in trials] == [0, 1], [(t.number, t.state, t.user_attrs) for t in trials]
        assert sorted(p.name for p in sweep_dir.glob("trial_*")) == ["trial_0000", "trial_0001"]
        statuses = {t.number: check_continued(t, sweep_dir, SYNC_STEPS, SYNC_VAL) for t in trials}
        # The requeued job continued its own trial: the same job id, the attempt after the requeue resumed.
        first, second, *_ = statuses[requeued.number]["attempts"]
        assert first["slurm_job_id"] == second["slurm_job_id"] == requeued.user_attrs["slurm_job_id"]
        assert second["previous_state"] == "requeued"
        # The cancelled one was continued by the sweeper's next batch: a job of its own, from the checkpoint.
        first, second, *_ = statuses[cancelled.number]["attempts"]
        assert first["slurm_job_id"] == cancelled.user_attrs["slurm_job_id"] != second["slurm_job_id"]
        assert second["previous_state"] == "cancelled" and _stamp(second["started"]) > stopped_at
        assert trials[cancelled.number].user_attrs["sesemi:stopped"].startswith("SIGTERM at step")
        assert f"trial {cancelled.number} continues in its run dir (SIGTERM at step" in text
        jobs = {j["num"]: j for j in read_json(sweep_dir / "jobs.json")["jobs"]}  # one entry per trial
        assert sorted(jobs) == [0, 1] and jobs[requeued.number]["job_id"] == requeued.user_attrs["slurm_job_id"]
        assert jobs[cancelled.number]["job_id"] == second["slurm_job_id"]  # the continuation's job, its first kept
        assert jobs[cancelled.number]["previous_job_ids"] == [cancelled.user_attrs["slurm_job_id"]]
        # The password is in no file of the sweep (configs, logs, status, metrics, the job pickles).
        leaks = [p for p in tmp_path.rglob("*") if p.is_file() and f":{PG_PASSWORD}@".encode() in p.read_bytes()]
        assert not leaks, leaks
    finally:
        sweep.cancel_jobs()
        with contextlib.suppress(KeyError):
            optuna.delete_study(study_name=name, storage=postgres)
