"""Three grid points packed into one SLURM job (``hydra.launcher.points_per_job=3``) on the real test cluster, each
its own process and run dir, requeued mid-training: by ``scontrol requeue`` (SLURM's SIGTERM to every process) and
by submitit's signal (a preemption warning or time limit: the job process forwards it to its points and requeues
the job once for all). Each point continues from its own checkpoint as its own run: two attempts of the same job,
every step logged once, completed at ``trainer.max_steps``. Both launches run side by side (one module fixture).
"""

from __future__ import annotations

import subprocess
from datetime import datetime
from pathlib import Path

import pytest
from cluster_testkit import (
    DOC_COMMANDS,
    Launch,
    cancel_jobs,
    needs_slurm,
    rank_records,
    rankcheck_overrides,
    read_json,
    subdirs,
    the_sweep_dir,
)
from conftest import run_cli, sacct
from faults import assert_each_step_once

pytestmark = [pytest.mark.slurm, pytest.mark.slow, needs_slurm]

MAX_STEPS, VAL_EVERY = 30, 5
SLOW_RUN = [f"trainer.max_steps={MAX_STEPS}", f"trainer.val_check_interval={VAL_EVERY}"]  # + 0.3 s a step, 1st start
POINTS = ("0", "1", "2")


def _signal_when_all_checkpointed(command: list[str]):
    """An action: once every point has its first checkpoint, ``command <job id>`` (the one job of the 3 points)."""

    def action(launch: Launch) -> None:
        def checkpointed() -> bool:
            return len(list(launch.workdir.glob("runs/*/*/[012]/checkpoints/last.ckpt"))) == len(POINTS)

        launch.wait_for(checkpointed, "a checkpoint of each point", timeout=300)
        (jobs,) = launch.workdir.glob("runs/*/*/jobs.json")
        job_ids = {j["job_id"] for j in read_json(jobs)["jobs"]}
        assert len(job_ids) == 1, job_ids
        cmd = [*command, job_ids.pop()]
        subprocess.run(cmd, check=True, capture_output=True, text=True)
        launch.intervention = " ".join(cmd)

    return action


@pytest.fixture(scope="module")
def launches(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("packing")
    started = {
        "requeue": Launch(
            "requeue",
            root / "requeue",
            [*SLOW_RUN, *DOC_COMMANDS["packed"], *rankcheck_overrides(root / "rq_ranks", 0.3)],
            action=_signal_when_all_checkpointed(["scontrol", "requeue"]),
            timeout=540,
            ranks_dir=root / "rq_ranks",
        ),
        "preempted": Launch(
            "preempted",
            root / "preempted",
            [
                *SLOW_RUN,
                *DOC_COMMANDS["packed"],
                "run.id=packed_usr2",
                *rankcheck_overrides(root / "usr2_ranks", 0.3),
            ],
            action=_signal_when_all_checkpointed(["scancel", "--signal=USR2"]),
            timeout=540,
            ranks_dir=root / "usr2_ranks",
        ),
    }
    yield started
    for launch in started.values():
        if launch.proc.poll() is None:
            launch.proc.kill()
        cancel_jobs(launch.workdir)


def _check_packed_requeue(launch: Launch, run_id: str, signal_name: str) -> tuple[Path, str]:
    rc, output = launch.wait()
    assert rc == 0, f"{launch.name} exited {rc}:\n{output[-6000:]}"
    sweep = the_sweep_dir(launch.workdir, run_id)
    assert subdirs(sweep) == [".code", ".submitit", *POINTS]  # each point its own run dir, nothing else
    jobs = read_json(sweep / "jobs.json")["jobs"]
    (job_id,) = {j["job_id"] for j in jobs}  # one job for the three points
    assert [j["num"] for j in jobs] == [0, 1, 2] and {j["points_per_job"] for j in jobs} == {3}
    assert sacct([job_id]) == {job_id: "COMPLETED"}
    for point in POINTS:
        run_dir = sweep / point
        status = read_json(run_dir / "status.json")
        assert status["state"] == "completed", (point, status)
        attempts = status["attempts"]
        assert len(attempts) == 2 and status["restarts"] == 1, (point, attempts)
        assert [a["slurm_job_id"] for a in attempts] == [job_id, job_id]  # the same job, requeued once
        assert attempts[1]["previous_state"] == "requeued"
        assert attempts[1]["resumed_from"] == str(run_dir / "checkpoints" / "last.ckpt")
        assert status["requeue_reason"].startswith(signal_name), status["requeue_reason"]
        step = int(status["requeue_reason"].split(" at step ")[1].split()[0])
        assert VAL_EVERY <= step < MAX_STEPS  # stopped mid-training, after its first checkpoint
        assert read_json(run_dir / "metrics.json")["global_step"] == MAX_STEPS
        assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
        assert_each_step_once(run_dir, MAX_STEPS, val_every=VAL_EVERY)  # as TensorBoard shows it
    finals = rank_records(launch.ranks_dir)  # written by each point's training when it ended
    assert sorted(Path(r["run_dir"]).name for r in finals) == list(POINTS)
    assert {r["step"] for r in finals} == {MAX_STEPS} and len({r["pid"] for r in finals}) == 3
    assert "3 jobs: 3 completed" in output
    return sweep, job_id


def test_a_requeued_packed_job_continues_each_point_from_its_own_checkpoint(launches):
    launch = launches["requeue"]
    sweep, job_id = _check_packed_requeue(launch, "packed", "SIGTERM")
    assert launch.intervention == f"scontrol requeue {job_id}"
    # sesemi.status: one row per point, the shared job id on each, one restart each.
    status = run_cli([str(sweep)], launch.workdir, fast=False, module="sesemi.status")
    rows = [line.split() for line in status.stdout.splitlines()[1:4]]
    assert [(r[0], r[2], r[3], r[4], r[5], r[-1]) for r in rows] == [
        (str(n), job_id, "COMPLETED", "completed", f"{MAX_STEPS}/{MAX_STEPS}", "1") for n in range(3)
    ], status.stdout
    assert [r[1] for r in rows] == ["optimizer.lr=0.01", "optimizer.lr=0.02", "optimizer.lr=0.03"]
    assert "3 jobs: 3 completed" in status.stdout


def test_submitits_signal_to_a_packed_job_is_forwarded_and_requeues_it_once(launches):
    launch = launches["preempted"]
    sweep, job_id = _check_packed_requeue(launch, "packed_usr2", "SIGUSR2")
    assert launch.intervention == f"scancel --signal=USR2 {job_id}"
    logs = sweep / ".submitit" / job_id
    assert "got SIGUSR2; forwarding it to the job's points" in (logs / f"{job_id}_0_log.err").read_text()
    job_log = (logs / f"{job_id}_0_log.out").read_text()
    assert job_log.count("Caught signal SIGUSR2") == 1  # submitit's handler, once, in the job process
    (requeued,) = [line for line in job_log.splitlines() if f"Requeued job {job_id}" in line]
    # ... once every point had saved its checkpoint and recorded itself requeued.
    requeued_at = datetime.strptime(requeued.split("(")[1].split(")")[0], "%Y-%m-%d %H:%M:%S,%f")
    for point in POINTS:
        (stopped,) = [
            line for line in (sweep / point / "train.log").read_text().splitlines() if "sesemi: requeued: " in line
        ]
        assert datetime.strptime(stopped[1:24], "%Y-%m-%d %H:%M:%S,%f") < requeued_at, (point, stopped, requeued)
