"""The MLflow and W&B loggers across a real SLURM requeue (scripts/slurm_cluster.sh start): the requeued job logs on
into the same MLflow run and the same W&B (offline) run, at the steps TensorBoard has. Two jobs side by side: one
requeued by ``scontrol requeue`` (SIGTERM to every process of the job, W&B's service process included), one by the
early signal of a time limit or a preemption (USR2: sesemi checkpoints, and submitit requeues the job)."""

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
from faults import FAULT, assert_strictly_increasing, tensorboard_steps
from logger_runs import mlflow_run, steps_of, wandb_history

pytestmark = [pytest.mark.slurm, pytest.mark.slow, needs_slurm]

STEPS = 30
RUN = [f"trainer.max_steps={STEPS}", "trainer.val_check_interval=5", "logger=[tensorboard,mlflow,wandb]"]
JOB = ["-m", "hydra/launcher=slurm_cpu", "hydra.launcher.partition=debug", "hydra.launcher.cpus_per_task=1"]


def _when_checkpointed(command: list[str]):
    """An action: once the first checkpoint exists (mid-training), run ``command <job id>``."""

    def action(launch: Launch) -> None:
        launch.wait_for(lambda: list(launch.workdir.glob("runs/*/*/0/checkpoints/last.ckpt")), "a checkpoint")
        job_id = launch.wait_for(first_attempt_job_id("runs/*/*/0", launch.workdir), "the job id")
        subprocess.run([*command, str(job_id)], check=True, capture_output=True, text=True)
        launch.intervention = " ".join([*command, str(job_id)])

    return action


@pytest.fixture(scope="module")
def launches(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("loggers")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("WANDB_MODE", "offline")  # the jobs inherit the environment they are submitted from
        started = {
            name: Launch(
                name,
                root / name,
                [*RUN, *JOB, f"run.id={name}", *rankcheck_overrides(root / f"{name}_ranks", 0.3)],  # 0.3 s a step
                action=_when_checkpointed(command),
                defaults=FAULT,
            )
            for name, command in (("requeue", ["scontrol", "requeue"]), ("usr2", ["scancel", "--signal=USR2"]))
        }
    yield started
    for launch in started.values():
        if launch.proc.poll() is None:
            launch.proc.kill()
            launch.proc.wait()
        cancel_jobs(launch.workdir)


def _requeued_run_dir(launch: Launch, reason: str) -> Path:
    rc, output = launch.wait()
    assert rc == 0, output[-6000:]
    run_dir = the_sweep_dir(launch.workdir, launch.name) / "0"
    status = read_json(run_dir / "status.json")
    assert status["state"] == "completed" and status["restarts"] >= 1, status
    assert status["requeue_reason"].startswith(reason), status  # a checkpoint at the signal's step, not a crash
    return run_dir


def _logged_steps(run_dir: Path) -> list[int]:
    """The steps of ``train/loss`` in TensorBoard's event files: every step once, in order, ending at the last."""
    steps = tensorboard_steps(run_dir, "train/loss")
    assert_strictly_increasing(steps, "train/loss")
    assert len(steps) == STEPS
    return steps


def _check_mlflow(run_dir: Path, run_id: str) -> None:
    client, run = mlflow_run(run_dir)
    (experiment,) = [e for e in client.search_experiments() if e.name == run_id]
    assert [r.info.run_id for r in client.search_runs([experiment.experiment_id])] == [run.info.run_id]
    assert run.info.status == "FINISHED" and run.info.run_name == "/".join(run_dir.parts[-2:])
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")] == _logged_steps(run_dir)


def test_scontrol_requeue_continues_the_mlflow_run_and_the_wandb_run(launches):
    """MLflow writes each step as it is logged: every step once. SIGTERM stops W&B's service with the job, so W&B
    loses what it had not written yet; the run still checkpoints at its step, and W&B goes on from there."""
    launch = launches["requeue"]
    run_dir = _requeued_run_dir(launch, "SIGTERM")
    assert launch.intervention.startswith("scontrol requeue")
    _check_mlflow(run_dir, "requeue")
    ids, rows, _ = wandb_history(run_dir)
    assert ids == {read_json(run_dir / "loggers.json")["wandb"]["id"]}  # one W&B run
    steps, logged = steps_of(rows, "train/loss"), _logged_steps(run_dir)
    assert_strictly_increasing(steps, "W&B's train/loss")  # nothing twice or backwards...
    assert set(steps) <= set(logged) and steps[-1] == logged[-1]  # ...and on to the end after the requeue


def test_the_early_signal_of_a_time_limit_continues_both_runs_step_for_step(launches):
    launch = launches["usr2"]
    run_dir = _requeued_run_dir(launch, "SIGUSR2")
    _check_mlflow(run_dir, "usr2")
    ids, rows, config = wandb_history(run_dir)
    status = read_json(run_dir / "status.json")
    assert len(list(run_dir.glob("wandb/offline-run-*"))) == len(status["attempts"])  # one per attempt...
    assert ids == {read_json(run_dir / "loggers.json")["wandb"]["id"]}  # ...of one W&B run
    assert steps_of(rows, "train/loss") == _logged_steps(run_dir)  # written out before the requeue: nothing lost
    assert config["run.id"] == "usr2"
