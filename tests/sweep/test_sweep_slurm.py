"""Sweeps on the real SLURM cluster (scripts/slurm_cluster.sh start) through ``hydra/launcher=slurm_cpu``:
synchronous, 2 trials at a time as SLURM jobs, and asynchronous, 2 workers as SLURM jobs; run side by side."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from cluster_testkit import SLURM_SWEEP
from conftest import FAST, read_json
from optuna.trial import TrialState

from sesemi.sweep.storage import make_storage

pytestmark = [
    pytest.mark.slurm,
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("sinfo") is None, reason="no SLURM client (scripts/slurm_cluster.sh start)"),
]

SLURM = SLURM_SWEEP


def load(sweep_dir: Path) -> optuna.Study:
    info = json.loads((sweep_dir / "sweep.json").read_text())
    return optuna.load_study(study_name=info["study_name"], storage=make_storage(None, sweep_dir))


@pytest.mark.slow
def test_sweeps_on_slurm(tmp_path: Path):
    launches = {
        "sync": [*SLURM, "hydra.sweeper.n_jobs=2", "hydra.sweeper.n_trials=2"],
        "async": [*SLURM, "hydra/sweeper=optuna_async", "hydra.sweeper.workers=2", "hydra.sweeper.n_trials=4"],
    }
    procs = {}
    for name, args in launches.items():
        (tmp_path / name).mkdir()
        procs[name] = subprocess.Popen(
            [sys.executable, "-m", "sesemi.train", *FAST, *args],
            cwd=tmp_path / name,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
    outputs = {name: proc.communicate(timeout=540)[0] for name, proc in procs.items()}
    for name, proc in procs.items():
        assert proc.returncode == 0, outputs[name][-5000:]

    # Synchronous: one SLURM job per trial, both trials of the batch at once.
    sweep = tmp_path / "sync" / "runs" / "sweeps" / "digits_fixmatch"
    trials = load(sweep).get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2
    job_ids = {t.user_attrs["slurm_job_id"] for t in trials}
    assert len(job_ids) == 2 and None not in job_ids
    for t in trials:
        metrics = read_json(sweep / f"trial_{t.number:04d}" / "metrics.json")
        assert metrics["objective"]["value"] == t.value
    starts = sorted(t.datetime_start for t in trials)
    assert (starts[1] - starts[0]).total_seconds() < 5  # taken together as one batch

    # Asynchronous: 2 worker jobs on the cluster ran the 4 trials of one study.
    sweep = tmp_path / "async" / "runs" / "sweeps" / "digits_fixmatch"
    trials = load(sweep).get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 4
    assert len({t.user_attrs["slurm_job_id"] for t in trials}) == 2
    assert len({t.user_attrs["worker"] for t in trials}) == 2
    workers = sorted((sweep / "workers").glob("*/w*"))
    assert len(workers) == 2 and all(read_json(w / "status.json")["state"] == "completed" for w in workers)
    assert sum(read_json(w / "metrics.json")["trials"] for w in workers) == 4


@pytest.mark.slow
def test_scancelled_worker_takes_no_new_trial_and_its_trial_continues(tmp_path: Path):
    """``scancel`` of an asynchronous worker's job mid-trial (SIGTERM to every process of the job, SIGKILL after
    KillWait): the trial checkpoints and is claimable at once (not after ``grace_period``); a replacement worker
    continues it as itself from its checkpoint; the dying worker takes no other trial."""
    args = [
        *FAST,
        "data.num_workers=2",  # loader workers on (the default data settings): a fault test
        *SLURM,
        "hydra/sweeper=optuna_async",
        "hydra.sweeper.workers=2",
        "hydra.sweeper.n_trials=4",
        "trainer.max_steps=30",
        "trainer.val_check_interval=6",
        "hydra/sweeper/pruner=none",
        "hydra.sweeper.heartbeat_interval=3",
        "hydra.sweeper.grace_period=300",  # longer than the test: the continuation must not wait for a lost heartbeat
    ]
    log = open(tmp_path / "sweep.log", "w")  # noqa: SIM115 - the sweep's output while it runs
    proc = subprocess.Popen(
        [sys.executable, "-m", "sesemi.train", *args], cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT
    )
    sweep = tmp_path / "runs" / "sweeps" / "digits_fixmatch"
    victim = None
    deadline = time.time() + 400
    try:
        while victim is None and time.time() < deadline and proc.poll() is None:
            time.sleep(0.5)
            if not (sweep / "sweep.json").is_file():
                continue
            for t in load(sweep).get_trials(states=(TrialState.RUNNING,)):
                run_dir = Path(t.user_attrs.get("run_dir", "/nonexistent"))
                if t.user_attrs.get("slurm_job_id") and (run_dir / "checkpoints" / "last.ckpt").is_file():  # training
                    victim = t
                    break
        assert victim is not None, (tmp_path / "sweep.log").read_text()[-3000:]
        job = victim.user_attrs["slurm_job_id"]
        subprocess.run(["scancel", job], check=True)
        cancelled_at = time.time()
        rc = proc.wait(timeout=540)
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    text = (tmp_path / "sweep.log").read_text()
    assert rc == 0, text[-4000:]

    # The budget of 4, exactly: the cancelled trial continued as itself, nothing was retried as a new trial.
    trials = load(sweep).get_trials()
    assert [t.number for t in trials] == [0, 1, 2, 3] and all(t.state == TrialState.COMPLETE for t in trials)
    continued = trials[victim.number]
    assert continued.params == victim.params and "retry_history" not in continued.user_attrs
    assert continued.user_attrs["sesemi:stopped"].startswith("SIGTERM at step"), continued.user_attrs
    # The run checkpointed and recorded the cancellation; its next attempt, in another worker job, resumed there.
    run_dir = Path(continued.user_attrs["run_dir"])
    status = read_json(run_dir / "status.json")
    first, second = status["attempts"]
    assert status["state"] == "completed" and first["slurm_job_id"] == job and second["slurm_job_id"] != job
    assert second["previous_state"] == "cancelled"
    assert second["resumed_from"] == str(run_dir / "checkpoints" / "last.ckpt")
    attempts = continued.user_attrs["sesemi:attempts"]
    assert len(attempts) == 2 and attempts[1]["step"] >= 6
    assert attempts[1]["at"] - cancelled_at < 240  # claimable at once, not after grace_period (a new worker's start)
    assert read_json(run_dir / "metrics.json")["global_step"] == 30
    assert sorted(continued.intermediate_values) == [6, 12, 18, 24, 30]  # each validation once, across attempts
    assert not [
        t.number
        for t in trials
        if t.user_attrs.get("slurm_job_id") == job
        and t.number != victim.number
        and t.datetime_start.timestamp() > cancelled_at
    ], "the cancelled worker took another trial"
    for t in trials:  # every other run dir finished normally, in one attempt
        status = read_json(Path(t.user_attrs["run_dir"]) / "status.json")
        assert status["state"] == "completed" and (len(status["attempts"]) == 1 or t.number == victim.number)
