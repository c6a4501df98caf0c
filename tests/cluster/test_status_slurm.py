"""Following jobs on the real SLURM cluster: detached sweeps, ``sesemi.status --wait``, ``--resubmit``, Ctrl-C on the
launcher, and a launcher that waits for a job whose failed attempt SLURM requeued.

Every launch is the user's command with tiny settings; they start together (one module fixture) and run side by
side on the test cluster. Which defaults each keeps: the resubmit, Ctrl-C and requeue tests are fault tests and
keep the data loader workers ON (``data.num_workers=2``, digits' default, after FAST's 0); the detached sweep only
submits and follows, so it keeps FAST's settings.
"""

from __future__ import annotations

import csv
import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cluster_testkit import (
    DOC_COMMANDS,
    Launch,
    cancel_jobs,
    needs_slurm,
    read_json,
    run_status,
    subdirs,
    the_sweep_dir,
)
from conftest import FAST, sacct

pytestmark = [pytest.mark.slurm, pytest.mark.slow, needs_slurm]

SMALL = ["hydra.launcher.cpus_per_task=1"]  # test-only: every launch of this module fits the 8 CPUs at once
WORKERS_ON = ["data.num_workers=2"]  # digits' default, back after FAST's 0

# Test-only callbacks, importable by the jobs from <launch dir>/src (run.src_dir).
FAULTS_SOURCE = '''
import os, subprocess, time
from pytorch_lightning.callbacks import Callback


class Slow(Callback):
    """A pause per step, so that a job can be caught mid-training."""

    def __init__(self, seconds):
        self.seconds = float(seconds)

    def on_train_batch_end(self, trainer, *args):
        time.sleep(self.seconds)


class FailAfterRequeue(Callback):
    """First attempt only: ask SLURM to requeue this job, then fail (the attempt's result says failed)."""

    def on_train_batch_end(self, trainer, *args):
        if trainer.global_step >= 4 and int(os.environ.get("SLURM_RESTART_COUNT", "0")) == 0:
            subprocess.run(["scontrol", "requeue", os.environ["SLURM_JOB_ID"]], check=True)
            raise RuntimeError("test: the first attempt fails after asking SLURM for a requeue")
'''


def _install_faults(workdir: Path) -> None:
    package = workdir / "src" / "sesemi_faults"
    package.mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text(FAULTS_SOURCE)


def slow(seconds: float) -> list[str]:
    return ["+callbacks.slow._target_=sesemi_faults.Slow", f"+callbacks.slow.seconds={seconds}"]


def status_cli(args: list[str], cwd: Path, timeout: float = 420) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sesemi.status", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


def detached(workdir: Path, args: list[str]) -> tuple[subprocess.CompletedProcess, float]:
    workdir.mkdir(parents=True, exist_ok=True)
    _install_faults(workdir)
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "sesemi.train", *FAST, *args], cwd=workdir, capture_output=True, text=True, timeout=300
    )
    return proc, time.monotonic() - started


def snapshot(run_dir: Path) -> dict[str, str]:
    return {
        str(p.relative_to(run_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(run_dir.rglob("*"))
        if p.is_file()
    }


class Background(Launch):
    def __init__(self, name: str, workdir: Path, args: list[str], timeout: float = 420) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        _install_faults(workdir)
        super().__init__(name, workdir, args, timeout=timeout)


@pytest.fixture(scope="module")
def launches(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("status")
    started = {
        # A failed attempt requeued by SLURM: the launcher waits for the job's last attempt.
        "requeued_failure": Background(
            "requeued_failure",
            root / "requeued_failure",
            [
                *WORKERS_ON,
                *DOC_COMMANDS["sweep"][:3],
                "run.id=failrequeue",
                *SMALL,
                "+callbacks.fail._target_=sesemi_faults.FailAfterRequeue",
            ],
        ),
        # Ctrl-C on a waiting launcher. Its job must still be running when the test reaches it, after the tests
        # before it: an hour of 1 s steps, cancelled by the test (and by the teardown).
        "interrupted": Background(
            "interrupted",
            root / "interrupted",
            [*WORKERS_ON, *DOC_COMMANDS["sweep"][:3], "run.id=ctrlc", *SMALL, *slow(1.0), "trainer.max_steps=3600"],
            timeout=1800,
        ),
    }
    yield started
    for launch in started.values():
        if launch.proc.poll() is None:
            launch.proc.kill()
            launch.proc.wait()
        cancel_jobs(launch.workdir)


def test_a_detached_sweep_returns_while_its_jobs_pend_and_status_wait_follows_them(tmp_path: Path):
    # slow(1.0): each job trains for 6 s or more, so --wait still sees it running however fast the machine is
    proc, seconds = detached(tmp_path, [*DOC_COMMANDS["detached"], *SMALL, *slow(1.0)])
    assert proc.returncode == 0, proc.stderr[-4000:]
    sweep_dir = the_sweep_dir(tmp_path, "lr_scan")
    jobs = read_json(sweep_dir / "jobs.json")["jobs"]
    ids = [j["job_id"] for j in jobs]
    # Returned before the jobs ended (they take tens of seconds here): nothing waited for them.
    assert set(sacct(ids).values()) <= {"PENDING", "RUNNING"}, (sacct(ids), seconds)
    assert len({i.split("_")[0] for i in ids}) == 1  # one job array
    assert [[o for o in j["overrides"] if o.startswith("optimizer.lr=")] for j in jobs] == [
        ["optimizer.lr=0.01"],
        ["optimizer.lr=0.1"],
    ]
    assert [Path(j["run_dir"]) for j in jobs] == [sweep_dir / "0", sweep_dir / "1"]
    where = os.path.relpath(sweep_dir, tmp_path)
    assert f"sesemi: submitted 2 job(s) to slurm: {ids[0]}, {ids[1]}; not waiting" in proc.stdout
    assert f"follow them:   python -m sesemi.status {where} --wait" in proc.stdout
    assert "Traceback" not in proc.stderr
    now = status_cli([where], tmp_path)  # while the jobs pend or run
    assert now.returncode == 1, now.stdout + now.stderr  # not all completed yet
    assert now.stdout.startswith("job  point ") and now.stdout.splitlines()[-1].startswith("2 jobs: ")

    follow = status_cli([where, "--wait", "--interval", "2"], tmp_path)
    assert follow.returncode == 0, follow.stdout + follow.stderr
    assert follow.stdout.splitlines()[-1] == "2 jobs: 2 completed"
    # the first table, then a line per change (not a TTY): a job is seen running in one or the other
    assert "RUNNING  running" in follow.stdout or ": running (SLURM RUNNING)" in follow.stdout
    assert ": completed (SLURM COMPLETED), step 6/6" in follow.stdout
    assert set(sacct(ids).values()) == {"COMPLETED"}
    for job in jobs:
        record = read_json(Path(job["run_dir"]) / "status.json")
        assert record["state"] == "completed" and record["progress"]["step"] == 6


def test_a_cancelled_point_is_resubmitted_and_completes_in_its_own_run_dir(tmp_path: Path):
    args = [*WORKERS_ON, "trainer.max_steps=20", "trainer.val_check_interval=5", *slow(0.5)]
    sweep = ["-m", "hydra/launcher=slurm_cpu", "hydra.launcher.partition=debug", "run.id=lr_scan"]
    proc, _ = detached(tmp_path, [*args, *sweep, "optimizer.lr=0.01,0.03,0.1", "hydra.launcher.wait=false", *SMALL])
    assert proc.returncode == 0, proc.stderr[-4000:]
    sweep_dir = the_sweep_dir(tmp_path, "lr_scan")
    jobs = read_json(sweep_dir / "jobs.json")["jobs"]
    try:
        deadline = time.monotonic() + 300
        while not (sweep_dir / "1" / "checkpoints" / "last.ckpt").is_file():
            assert time.monotonic() < deadline, "point 1 never wrote a checkpoint"
            time.sleep(0.5)
        subprocess.run(["scancel", jobs[1]["job_id"]], check=True)
        first = status_cli([str(sweep_dir), "--wait", "--interval", "2"], tmp_path)
        assert first.returncode == 1, first.stdout + first.stderr  # not all completed
        assert first.stdout.splitlines()[-1].startswith("3 jobs: 2 completed, 1 ")
        assert f"- job 1 ({jobs[1]['job_id']}) " in first.stdout
        untouched = {num: snapshot(sweep_dir / num) for num in ("0", "2")}

        again = status_cli([str(sweep_dir), "--resubmit", "hydra.launcher.timeout_min=30"], tmp_path)
        assert again.returncode == 1, again.stdout + again.stderr  # point 1 not completed yet
        assert "sesemi: resubmitted 1 point(s)" in again.stdout and "resumes from its last.ckpt" in again.stdout
        # on the code the sweep was submitted with (jobs.json names the snapshot), whatever the tree holds now
        code = jobs[1]["snapshot"]
        assert code == str(next((sweep_dir / ".code").iterdir())) and f", code snapshot {code}" in again.stdout
        done = status_cli([str(sweep_dir), "--wait", "--interval", "2"], tmp_path)
        assert done.returncode == 0, done.stdout + done.stderr
        assert done.stdout.splitlines()[-1] == "3 jobs: 3 completed"
    finally:
        cancel_jobs(tmp_path)
    resubmitted = read_json(sweep_dir / "jobs.json")["jobs"][1]
    assert resubmitted["previous_job_ids"] == [jobs[1]["job_id"]] and resubmitted["job_id"] != jobs[1]["job_id"]
    assert sacct([resubmitted["job_id"]]) == {resubmitted["job_id"]: "COMPLETED"}
    assert resubmitted["params"]["timeout_min"] == 30
    record = read_json(sweep_dir / "1" / "status.json")
    assert record["state"] == "completed" and record["restarts"] == 1
    assert record["attempts"][-1]["slurm_job_id"] == resubmitted["job_id"]  # a new job, in the same run dir
    assert read_json(sweep_dir / "1" / "metrics.json")["global_step"] == 20
    assert record["attempts"][-1]["resumed_from"] == str(sweep_dir / "1" / "checkpoints" / "last.ckpt")
    assert subdirs(sweep_dir) == [".code", ".submitit", "0", "1", "2"]  # its own run dir, no new one
    for num, files in untouched.items():
        assert snapshot(sweep_dir / num) == files, f"run dir {num} changed"


def test_the_launcher_waits_for_a_job_whose_failed_attempt_was_requeued(launches):
    launch = launches["requeued_failure"]
    rc, output = launch.wait()
    assert rc == 0, output[-6000:]
    sweep_dir = the_sweep_dir(launch.workdir, "failrequeue")
    record = read_json(sweep_dir / "0" / "status.json")
    assert record["state"] == "completed" and record["restarts"] >= 1
    assert record["attempts"][0]["slurm_job_id"] == record["attempts"][1]["slurm_job_id"]  # the same job, requeued
    (row,) = csv.DictReader((sweep_dir / "summary.csv").open())
    assert (row["state"], row["slurm_state"], int(row["restarts"])) == ("completed", "COMPLETED", record["restarts"])
    assert "1 jobs: 1 completed" in output


def test_ctrl_c_on_the_launcher_leaves_the_jobs_running_and_says_how_to_follow_or_cancel_them(launches):
    launch = launches["interrupted"]
    launch.wait_for(
        lambda: run_status(launch.workdir, "runs/ctrlc/*/0").get("state") == "running", "the job to start training"
    )
    launch.proc.send_signal(signal.SIGINT)
    rc, output = launch.wait()
    sweep_dir = the_sweep_dir(launch.workdir, "ctrlc")
    where = os.path.relpath(sweep_dir, launch.workdir)
    (job,) = read_json(sweep_dir / "jobs.json")["jobs"]
    try:
        assert rc == 130, output[-4000:]
        assert "Traceback" not in output and "KeyboardInterrupt" not in output
        assert f"The 1 job(s) keep running on SLURM ({job['job_id']})" in output
        assert f"follow them: python -m sesemi.status {where} --wait" in output
        assert f"cancel them: scancel {job['job_id'].split('_')[0]}" in output
        assert sacct([job["job_id"]])[job["job_id"]] in ("RUNNING", "PENDING")
    finally:
        subprocess.run(["scancel", job["job_id"]], check=False)
