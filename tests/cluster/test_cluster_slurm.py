"""Sweeps on the real SLURM cluster (scripts/slurm_cluster.sh start): job arrays, DDP over SLURM tasks, requeue.

Every launch is the user's command (``python -m sesemi.train -m hydra/launcher=slurm_cpu ...``, CPU DDP with gloo,
tiny settings). They are all started at once by one module fixture and run side by side on the cluster, so the
module takes about as long as its slowest launch (the real time limit); each test then checks one of them.
"""

from __future__ import annotations

import csv
import itertools
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest
import torch
import yaml
from cluster_testkit import (
    DOC_COMMANDS,
    TIMELIMIT_RUN,
    TIMELIMIT_SLOW_S,
    Launch,
    cancel_jobs,
    check_requeued,
    first_attempt_job_id,
    needs_slurm,
    rank_records,
    rankcheck_overrides,
    read_json,
    subdirs,
    the_sweep_dir,
)
from conftest import run_cli, sacct
from faults import FAULT, assert_each_step_once, assert_strictly_increasing, tensorboard_steps

pytestmark = [pytest.mark.slurm, pytest.mark.slow, needs_slurm]

# Test-only: one CPU per task, so that all launches of this module fit the test cluster's 8 CPUs at once.
SMALL = ["hydra.launcher.cpus_per_task=1"]
SLOW_RUN = ["trainer.max_steps=30", "trainer.val_check_interval=5"]  # + a 0.3 s pause per step in the first start


def _signal_when_checkpointed(command: list[str]):
    """An action: once the first checkpoint exists (mid-training), run ``command <job id>`` (scontrol requeue,
    scancel), the job id being in the run dir's status.json."""

    def action(launch: Launch) -> None:
        launch.wait_for(lambda: list(launch.workdir.glob("runs/*/*/0/checkpoints/last.ckpt")), "a checkpoint")
        job_id = launch.wait_for(first_attempt_job_id("runs/*/*/0", launch.workdir), "the job id")
        cmd = [*command, str(job_id)]
        subprocess.run(cmd, check=True, capture_output=True, text=True)
        launch.intervention = " ".join(cmd)

    return action


def _signal_while_starting(launch: Launch) -> None:
    """An action: submitit's signal (as a time limit's or a preemption's early warning) to the job's task while it
    unpickles the job, i.e. imports torch, Lightning and sesemi (submitit logs "Loading pickle" just before)."""
    task_log = launch.wait_for(
        lambda: next(
            (p for p in launch.workdir.glob("runs/*/*/.submitit/*/*_0_log.out") if "Loading pickle" in p.read_text()),
            None,
        ),
        "the job to load its pickle",
        poll_s=0.05,
    )
    job_id = task_log.parent.name
    subprocess.run(["scancel", "--signal=USR2", job_id], check=True, capture_output=True, text=True)
    launch.intervention = f"scancel --signal=USR2 {job_id}"


@pytest.fixture(scope="module")
def launches(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("slurm")
    # The fault launches (time limits, requeue, cancel) keep the shipped data settings: FAULT is FAST without
    # data.num_workers=0, so 2 persistent DataLoader workers per rank receive SLURM's signals too.
    started = {
        # A real time limit (first: it takes longest): 3 minutes, the signal 60 s before; slow in its first start.
        "timelimit": Launch(
            "timelimit",
            root / "timelimit",
            [
                *TIMELIMIT_RUN,
                *DOC_COMMANDS["timelimit"],
                *SMALL,
                *rankcheck_overrides(root / "tl_ranks", TIMELIMIT_SLOW_S),
            ],
            timeout=600,
            ranks_dir=root / "tl_ranks",
            defaults=FAULT,
        ),
        # The same as a 2-process DDP job (2 SLURM tasks).
        "timelimit_ddp": Launch(
            "timelimit_ddp",
            root / "timelimit_ddp",
            [
                *TIMELIMIT_RUN,
                *DOC_COMMANDS["timelimit"],
                "run.id=timelimit_ddp",
                "run.devices=2",
                *SMALL,
                *rankcheck_overrides(root / "tl_ddp_ranks", TIMELIMIT_SLOW_S),
            ],
            timeout=600,
            ranks_dir=root / "tl_ddp_ranks",
            defaults=FAULT,
        ),
        # Requeued mid-training by `scontrol requeue` (SIGTERM, SLURM restarts the job).
        "requeue": Launch(
            "requeue",
            root / "requeue",
            [*SLOW_RUN, *DOC_COMMANDS["requeue"], *SMALL, *rankcheck_overrides(root / "rq_ranks", 0.3)],
            action=_signal_when_checkpointed(["scontrol", "requeue"]),
            ranks_dir=root / "rq_ranks",
            defaults=FAULT,
        ),
        # Cancelled mid-training by `scancel` (SIGTERM, no restart): resumed afterwards with run.resume.
        "cancel": Launch(
            "cancel",
            root / "cancel",
            [
                *SLOW_RUN,
                "-m",
                "hydra/launcher=slurm_cpu",
                "hydra.launcher.partition=debug",
                "run.id=cancel",
                *SMALL,
                *rankcheck_overrides(root / "cancel_ranks", 0.3),
            ],
            action=_signal_when_checkpointed(["scancel"]),
            ranks_dir=root / "cancel_ranks",
            defaults=FAULT,
        ),
        # A preemption warning (USR2) while the job process starts, before submitit's handler exists.
        "startup_signal": Launch(
            "startup_signal",
            root / "startup_signal",
            ["-m", "hydra/launcher=slurm_cpu", "hydra.launcher.partition=debug", "run.id=startup", *SMALL],
            action=_signal_while_starting,
            defaults=FAULT,
        ),
        # The sweep, on the CPU profile: 2 points -> a job array of 2.
        "sweep": Launch("sweep", root / "sweep", [*DOC_COMMANDS["sweep"], *SMALL]),
        # One job, 2 tasks -> 2-process DDP (gloo).
        "ddp": Launch(
            "ddp",
            root / "ddp",
            [*DOC_COMMANDS["ddp"], *SMALL, *rankcheck_overrides(root / "ddp_ranks")],
            ranks_dir=root / "ddp_ranks",
        ),
        # A failing point next to a good one: reported, not hidden.
        "failing": Launch(
            "failing",
            root / "failing",
            [
                "-m",
                "hydra/launcher=slurm_cpu",
                "hydra.launcher.partition=debug",
                *SMALL,
                "run.id=bad",
                "optimizer.lr=0.05,-1.0",
            ],
        ),
    }
    yield started
    for launch in started.values():  # a test that failed early leaves its launch running: stop it
        if launch.proc.poll() is None:
            launch.proc.kill()
            launch.proc.wait()
            cancel_jobs(launch.workdir)


def _completed(launch: Launch) -> str:
    rc, output = launch.wait()
    assert rc == 0, f"{launch.name} exited {rc}:\n{output[-6000:]}"
    return output


def test_two_point_sweep_gives_two_slurm_jobs_and_two_completed_run_dirs(launches):
    launch = launches["sweep"]
    output = _completed(launch)
    sweep_dir = the_sweep_dir(launch.workdir, "lr_scan")
    assert subdirs(sweep_dir) == [".code", ".submitit", "0", "1"]
    jobs = read_json(sweep_dir / "jobs.json")["jobs"]
    job_ids = [j["job_id"] for j in jobs]
    assert len(set(job_ids)) == 2 and all("_" in j for j in job_ids)  # one job array, one element per point
    for job, lr in zip(jobs, (0.01, 0.1)):
        run_dir = Path(job["run_dir"])
        assert run_dir == sweep_dir / str(job["num"])
        assert read_json(run_dir / "status.json")["state"] == "completed"
        assert f"optimizer.lr={lr}" in yaml.safe_load((run_dir / ".hydra" / "overrides.yaml").read_text())
        assert yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text())["optimizer"]["lr"] == lr
        assert read_json(run_dir / "metrics.json")["global_step"] == 6
        assert read_json(run_dir / "status.json")["attempts"][0]["slurm_job_id"]
        assert Path(job["stdout"]).is_file() and Path(job["stderr"]).is_file()
    # SLURM's own record of the two jobs, and the summary printed and written into the sweep dir.
    assert sacct(job_ids) == dict.fromkeys(job_ids, "COMPLETED")
    rows = list(csv.DictReader((sweep_dir / "summary.csv").open()))
    assert [(r["job_id"], r["state"], r["slurm_state"]) for r in rows] == [
        (j, "completed", "COMPLETED") for j in job_ids
    ]
    assert all(0 <= float(r["objective"]) <= 1 for r in rows)
    assert "sesemi: sweep summary" in output and "2 jobs: 2 completed" in output
    assert (sweep_dir / "summary.md").read_text().count("| completed |") == 2


def test_summary_command_reads_a_sweep_dir_again(launches):
    launch = launches["sweep"]
    _completed(launch)
    sweep_dir = the_sweep_dir(launch.workdir, "lr_scan")
    proc = subprocess.run(
        [sys.executable, "-m", "sesemi.cluster.summary", str(sweep_dir)],
        cwd=launch.workdir,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "2 jobs: 2 completed" in proc.stdout and "COMPLETED" in proc.stdout


def test_one_job_with_two_tasks_trains_two_process_ddp(launches):
    launch = launches["ddp"]
    output = _completed(launch)
    sweep_dir = the_sweep_dir(launch.workdir, "ddp")
    assert subdirs(sweep_dir) == [".code", ".submitit", "0"]  # one run dir, nothing stray
    ranks = rank_records(launch.ranks_dir)
    assert [r["rank"] for r in ranks] == [0, 1]
    assert {r["world_size"] for r in ranks} == {2}
    assert {r["environment"] for r in ranks} == {"SLURMEnvironment"}
    assert len({r["pid"] for r in ranks}) == 2
    assert ranks[0]["config"] == ranks[1]["config"]  # same hyperparameters
    assert ranks[0]["weights"] == ranks[1]["weights"]  # in sync at the end
    assert {r["run_dir"] for r in ranks} == {str(sweep_dir / "0")}
    # Each rank is a SLURM task with its own log; the run dir is rank 0's only.
    job_id = read_json(sweep_dir / "jobs.json")["jobs"][0]["job_id"]
    task_logs = sorted(p.name for p in (sweep_dir / ".submitit" / job_id).glob("*_log.out"))
    assert task_logs == [f"{job_id}_0_log.out", f"{job_id}_1_log.out"]
    assert "MEMBER: 2/2" in (sweep_dir / ".submitit" / job_id / f"{job_id}_1_log.err").read_text()
    run_dir = sweep_dir / "0"
    assert sorted(p.name for p in run_dir.glob("*.log")) == ["train.log"]
    assert read_json(run_dir / "status.json")["state"] == "completed"
    assert "1 jobs: 1 completed" in output


def test_a_failed_job_is_reported_in_the_summary_not_hidden(launches):
    launch = launches["failing"]
    rc, output = launch.wait()
    assert rc != 0  # the sweep fails...
    sweep_dir = the_sweep_dir(launch.workdir, "bad")
    rows = {r["job"]: r for r in csv.DictReader((sweep_dir / "summary.csv").open())}
    assert rows["0"]["state"] == "completed"  # ...after the good job ran to the end,
    assert rows["1"]["state"] == "failed" and "Invalid learning rate" in rows["1"]["error"]  # with the reason
    assert Path(rows["1"]["stderr"]).is_file()
    assert "2 jobs: 1 completed, 1 failed" in output
    assert "- job 1 (" in output and "Invalid learning rate" in output


def test_scontrol_requeue_mid_training_resumes_in_the_same_run_dir(launches):
    launch = launches["requeue"]
    status = check_requeued(launch, "requeue", "SIGTERM", max_steps=30, world=2)
    assert launch.intervention.startswith("scontrol requeue")
    # The signal came mid-training: after the first checkpoint (step 5), well before step 30.
    step = int(status["requeue_reason"].split(" at step ")[1].split()[0])
    assert 5 <= step < 30


def _check_time_limit(launch: Launch, run_id: str, world: int) -> None:
    status = check_requeued(launch, run_id, "SIGUSR2", max_steps=60, world=world)
    # submitit's handler ran once per requeue in each task, i.e. in the training process only: before, every
    # DataLoader worker caught the signal as well (several lines within a second), and one requeued the job itself.
    # (A time limit that comes before training started is requeued by submitit alone: at least `restarts` lines.)
    for task_log in (launch.workdir / "runs").glob(f"{run_id}/*/.submitit/*/*_log.err"):
        caught = [
            datetime.strptime(line.split("(")[1].split(")")[0], "%Y-%m-%d %H:%M:%S,%f")
            for line in task_log.read_text().splitlines()
            if "Caught signal SIGUSR2" in line
        ]
        assert len(caught) >= status["restarts"], task_log
        assert all((b - a).total_seconds() > 5 for a, b in itertools.pairwise(caught)), (task_log, caught)


def test_time_limit_signal_requeues_and_the_job_finishes(launches):
    _check_time_limit(launches["timelimit"], "timelimit", world=1)


def test_time_limit_of_a_two_process_ddp_job_requeues_and_finishes(launches):
    _check_time_limit(launches["timelimit_ddp"], "timelimit_ddp", world=2)


def test_a_preemption_signal_while_the_job_starts_requeues_it(launches):
    launch = launches["startup_signal"]
    output = _completed(launch)
    assert launch.intervention.startswith("scancel --signal=USR2")
    sweep_dir = the_sweep_dir(launch.workdir, "startup")
    assert subdirs(sweep_dir) == [".code", ".submitit", "0"]
    status = read_json(sweep_dir / "0" / "status.json")
    assert status["state"] == "completed", status
    job_id = read_json(sweep_dir / "jobs.json")["jobs"][0]["job_id"]
    logs = sweep_dir / ".submitit" / job_id
    # It came before submitit's handler existed (without sesemi's job process: the task died of it, job FAILED)...
    assert "SIGUSR2 came while the job was starting" in (logs / f"{job_id}_0_log.err").read_text()
    # ...and submitit took it over and requeued the job, which then ran.
    assert "Caught signal SIGUSR2" in (logs / f"{job_id}_0_log.out").read_text()
    assert [a["slurm_job_id"] for a in status["attempts"]] == [job_id]  # the run itself started once
    assert sacct([job_id]) == {job_id: "COMPLETED"}
    assert "1 jobs: 1 completed" in output


def test_scancel_gives_a_cancelled_run_whose_checkpoint_resumes(launches):
    launch = launches["cancel"]
    _, output = launch.wait()
    assert launch.intervention.startswith("scancel")
    sweep_dir = the_sweep_dir(launch.workdir, "cancel")
    run_dir = sweep_dir / "0"
    status = read_json(run_dir / "status.json")
    assert status["state"] == "cancelled" and status["signal"] == "SIGTERM", status
    step = int(status["stop_reason"].split(" at step ")[1].split()[0])
    assert 5 <= step < 30
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == step
    assert not (run_dir / "metrics.json").exists()
    assert "| cancelled |" in output  # the launcher's summary says so
    # Continue it here, in its own run dir.
    proc = run_cli([*FAULT, f"run.resume={run_dir}", *SLOW_RUN], launch.workdir, fast=False, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    status = read_json(run_dir / "status.json")
    assert status["state"] == "completed" and status["attempts"][-1]["previous_state"] == "cancelled"
    assert read_json(run_dir / "metrics.json")["global_step"] == 30
    for tag in ("train/loss", "val/acc"):
        assert_strictly_increasing(tensorboard_steps(run_dir, tag), tag)
    assert_each_step_once(run_dir, max_steps=30, val_every=5)  # as TensorBoard shows it: no gap at the cancel
    assert subdirs(sweep_dir) == [".code", ".submitit", "0"]
