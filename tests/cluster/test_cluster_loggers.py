"""The MLflow and W&B loggers across a real SLURM requeue (scripts/slurm_cluster.sh start): the requeued job logs on
into the same MLflow run and the same W&B (offline) run, every step once."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from cluster_testkit import (
    Launch,
    cancel_jobs,
    first_attempt_job_id,
    needs_slurm,
    rankcheck_overrides,
    read_json,
    the_sweep_dir,
)
from faults import FAULT
from logger_runs import mlflow_run, steps_of, wandb_history

pytestmark = [pytest.mark.slurm, pytest.mark.slow, needs_slurm]

STEPS = 30
RUN = [f"trainer.max_steps={STEPS}", "trainer.val_check_interval=5", "logger=[tensorboard,mlflow,wandb]"]
JOB = ["-m", "hydra/launcher=slurm_cpu", "hydra.launcher.partition=debug", "hydra.launcher.cpus_per_task=1"]


def _requeue_when_checkpointed(launch: Launch) -> None:
    """Once the first checkpoint exists (mid-training), ``scontrol requeue`` the job."""
    launch.wait_for(lambda: list(launch.workdir.glob("runs/*/*/0/checkpoints/last.ckpt")), "a checkpoint")
    job_id = launch.wait_for(first_attempt_job_id("runs/*/*/0", launch.workdir), "the job id")
    subprocess.run(["scontrol", "requeue", str(job_id)], check=True, capture_output=True, text=True)
    launch.intervention = f"scontrol requeue {job_id}"


def test_a_requeued_job_logs_on_into_its_mlflow_and_wandb_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("WANDB_MODE", "offline")  # the job inherits the environment it is submitted from
    ranks = tmp_path / "ranks"
    args = [*RUN, *JOB, "run.id=loggers", *rankcheck_overrides(ranks, 0.3)]  # 0.3 s per step in the first start
    launch = Launch("loggers", tmp_path / "launch", args, action=_requeue_when_checkpointed, defaults=FAULT)
    try:
        rc, output = launch.wait()
    finally:
        if launch.proc.poll() is None:
            launch.proc.kill()
        cancel_jobs(launch.workdir)
    assert rc == 0, output[-6000:]
    assert launch.intervention.startswith("scontrol requeue")
    run_dir = the_sweep_dir(launch.workdir, "loggers") / "0"
    status = read_json(run_dir / "status.json")
    assert status["state"] == "completed" and status["restarts"] >= 1, status
    every_step = list(range(STEPS))

    client, run = mlflow_run(run_dir)
    (experiment,) = [e for e in client.search_experiments() if e.name == "loggers"]
    assert [r.info.run_id for r in client.search_runs([experiment.experiment_id])] == [run.info.run_id]
    assert run.info.status == "FINISHED" and run.info.run_name == "/".join(run_dir.parts[-2:])
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")] == every_step

    ids, rows, config = wandb_history(run_dir)
    assert len(list(run_dir.glob("wandb/offline-run-*"))) == 1 + status["restarts"]  # one per attempt...
    assert ids == {read_json(run_dir / "loggers.json")["wandb"]["id"]}  # ...of one W&B run
    assert steps_of(rows, "train/loss") == every_step
    assert config["run.id"] == "loggers"
