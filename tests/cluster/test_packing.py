"""Several sweep points per job (``hydra.launcher.points_per_job``, sesemi.cluster.packing): how a job's GPUs and
CPUs are shared out, the checks before submission, and real packed jobs on submitit's local executor (each point
its own process and run dir, a failed point not stopping the others, ``sesemi.status`` and ``--resubmit``).
The SLURM side (requeue of a packed job): tests/cluster/test_cluster_packing.py."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from cluster_testkit import cli
from conftest import run_cli

from sesemi.cluster.packing import Packing, gpus_for, packs, point_files, threads_for
from sesemi.cluster.validate import check_job
from sesemi.errors import ConfigError

# --------------------------------------------------------------------------------------------- the GPU split


@pytest.mark.parametrize(
    ("visible", "k", "expected"),
    [
        (["0", "1", "2", "3"], 4, ["0", "1", "2", "3"]),  # one GPU per point
        (["0", "1"], 4, ["0", "1", "0", "1"]),  # fewer GPUs than points: two points per GPU, round robin
        (["3"], 3, ["3", "3", "3"]),  # one GPU shared by all
        (["4", "6", "7"], 2, ["4", "6"]),  # SLURM's ids as CUDA_VISIBLE_DEVICES lists them, not 0..G-1
        ([], 3, [None, None, None]),  # no GPU: CUDA_VISIBLE_DEVICES left as it is
        (["0", " ", ""], 2, ["0", "0"]),  # blanks of a sloppy variable are no GPUs
    ],
)
def test_split_gives_point_i_the_gpu_i_mod_g(visible, k, expected):
    assert gpus_for(visible, k) == expected


def test_shared_shows_every_point_all_gpus():
    assert gpus_for(["0", "1"], 3, "shared") == ["0,1"] * 3
    assert gpus_for([], 2, "shared") == [None, None]
    with pytest.raises(ValueError):
        gpus_for(["0"], 2, "halves")


@pytest.mark.parametrize(
    ("cpus", "k", "threads", "expected"),
    [(8, 3, None, 2), (2, 3, None, 1), (6, 3, None, 2), (None, 3, None, None), (8, 3, 4, 4), (None, 2, 1, 1)],
)
def test_threads_per_point_are_the_jobs_cpus_divided_by_k_or_point_threads(cpus, k, threads, expected):
    assert threads_for(cpus, k, threads) == expected


def test_points_go_k_to_a_job_in_order():
    assert packs(list(range(7)), 3) == [[0, 1, 2], [3, 4, 5], [6]]
    assert packs([0, 1], 1) == [[0], [1]]
    files = point_files("/s/.submitit/12_0", "12_0", 4)
    assert files["stdout"] == Path("/s/.submitit/12_0/12_0_point4_log.out")
    assert files["result"].parent == Path("/s/.submitit/12_0")


# ------------------------------------------------------------------------------------------ checked before


@pytest.mark.parametrize(
    ("launcher", "key"),
    [
        ({"points_per_job": 0}, "hydra.launcher.points_per_job"),
        ({"points_per_job": "three"}, "hydra.launcher.points_per_job"),
        ({"points_per_job": 2, "point_gpus": "halves"}, "hydra.launcher.point_gpus"),
        ({"points_per_job": 2, "point_threads": 0}, "hydra.launcher.point_threads"),
    ],
)
def test_a_bad_packing_value_names_its_key(launcher, key):
    with pytest.raises(ConfigError) as err:
        Packing.of(launcher)
    assert err.value.key == key


def test_packing_defaults_and_values():
    assert Packing.of({}) == Packing(1, "split", None)
    assert Packing.of({"points_per_job": 3, "point_gpus": "shared", "point_threads": 2}) == Packing(3, "shared", 2)


GPU_JOB = {"tasks_per_node": 1, "nodes": 1, "gpus_per_node": 1}
ONE = {"devices": 1, "num_nodes": 1, "accelerator": "auto", "strategy": "auto"}


def _keys(problems: list[ConfigError]) -> list[str]:
    return [p.key for p in problems]


def test_packed_points_share_up_to_one_gpu_each():
    for gpus in (1, 2, 4):  # 4 points on 1, 2 or 4 GPUs
        assert (
            check_job({**GPU_JOB, "gpus_per_node": gpus}, ONE, profile="gpu", executor="slurm", points_per_job=4) == []
        )
    # More GPUs than points: some idle. Unpacked, gpus_per_node must still be run.devices.
    idle = check_job({**GPU_JOB, "gpus_per_node": 8}, ONE, profile="gpu", executor="slurm", points_per_job=4)
    assert _keys(idle) == ["hydra.launcher.gpus_per_node"] and "idle" in idle[0].problem
    assert _keys(check_job({**GPU_JOB, "gpus_per_node": 2}, ONE, profile="gpu", executor="slurm")) == [
        "hydra.launcher.gpus_per_node"
    ]


def test_packed_points_are_one_process_each():
    ddp = {**ONE, "devices": 2}
    problems = check_job(
        {**GPU_JOB, "tasks_per_node": 2, "gpus_per_node": 2}, ddp, profile="gpu", executor="slurm", points_per_job=3
    )
    assert _keys(problems) == ["hydra.launcher.points_per_job"]
    assert "run.devices=1 run.num_nodes=1" in problems[0].fix


# ------------------------------------------------------------------------------------ real packed local jobs

# Test-only callback (the launch dir's src/): each point's process writes what it runs with.
POINTCHECK = """
import json, os
from pathlib import Path
import torch
from pytorch_lightning.callbacks import Callback


class PointCheck(Callback):
    def __init__(self, out_dir):
        self.out_dir = Path(out_dir)

    def on_train_start(self, trainer, pl_module):
        self.out_dir.mkdir(parents=True, exist_ok=True)
        record = {
            "pid": os.getpid(),
            "ppid": os.getppid(),
            "point": os.environ.get("SESEMI_PACKED_POINT"),
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "omp": os.environ.get("OMP_NUM_THREADS"),
            "torch_threads": torch.get_num_threads(),
            "run_dir": pl_module.config["run"]["output_dir"],
        }
        (self.out_dir / f"{os.getpid()}.json").write_text(json.dumps(record))
"""


def _workspace(tmp_path: Path) -> Path:
    package = tmp_path / "src" / "sesemi_pointcheck"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(POINTCHECK)
    return tmp_path


@pytest.mark.slow
def test_three_points_in_one_local_job_each_its_own_process_and_run_dir(tmp_path: Path):
    """One submitit local job runs the 3 points of a grid as 3 processes (GPUs split, 1 thread each: 2 CPUs / 3);
    the point with an invalid learning rate fails alone; sesemi.status shows each point with the shared job id, and
    --resubmit sends the failed point back as a job of its own."""
    work = _workspace(tmp_path)
    points = work / "points"
    proc = run_cli(
        [
            "-m",
            "hydra/launcher=local",
            "run.id=packed",
            "run.accelerator=cpu",
            "optimizer.lr=0.01,-1,0.03",
            "hydra.launcher.points_per_job=3",
            "hydra.launcher.gpus_per_node=2",  # the local executor sets CUDA_VISIBLE_DEVICES=0,1 for the job
            "+callbacks.pointcheck._target_=sesemi_pointcheck.PointCheck",
            f"+callbacks.pointcheck.out_dir={points}",
        ],
        work,
        check=False,
    )
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]  # a failed point: exit 1
    assert "submitted 3 point(s) in 1 job(s)" in proc.stdout
    (sweep,) = (work / "runs" / "packed").iterdir()
    jobs = json.loads((sweep / "jobs.json").read_text())["jobs"]
    assert [j["num"] for j in jobs] == [0, 1, 2]
    assert len({j["job_id"] for j in jobs}) == 1 and {j["points_per_job"] for j in jobs} == {3}
    assert [Path(j["run_dir"]).name for j in jobs] == ["0", "1", "2"]
    for job in jobs:  # each point's own log files, in its job's folder
        assert Path(job["stdout"]).name == f"{job['job_id']}_point{job['num']}_log.out"
    states = {n: json.loads((sweep / n / "status.json").read_text())["state"] for n in ("0", "1", "2")}
    assert states == {"0": "completed", "1": "failed", "2": "completed"}
    assert "Invalid learning rate" in Path(jobs[1]["stderr"]).read_text() + (sweep / "1" / "train.log").read_text()

    records = sorted((json.loads(p.read_text()) for p in points.glob("*.json")), key=lambda r: r["point"])
    assert [r["point"] for r in records] == ["0", "2"]  # point 1 failed before training
    assert len({r["pid"] for r in records}) == 2 and len({r["ppid"] for r in records}) == 1  # one job process
    assert [r["cuda_visible_devices"] for r in records] == ["0", "0"]  # point i: GPU i mod 2 (point 1 had "1")
    assert {r["omp"] for r in records} == {"1"} and {r["torch_threads"] for r in records} == {1}
    assert [Path(r["run_dir"]).name for r in records] == ["0", "2"]

    status = run_cli(["--all", str(sweep)], work, fast=False, check=False, module="sesemi.status")
    rows = [line.split() for line in status.stdout.splitlines()[1:4]]
    assert [row[0] for row in rows] == ["0", "1", "2"], status.stdout
    assert {row[2] for row in rows} == {jobs[0]["job_id"]}, status.stdout  # the shared job id on every row
    assert "3 jobs: 2 completed, 1 failed" in status.stdout

    again = run_cli([str(sweep), "--resubmit"], work, fast=False, check=False, module="sesemi.status")
    assert "resubmitted 1 point(s)" in again.stdout, again.stdout + again.stderr
    entry = json.loads((sweep / "jobs.json").read_text())["jobs"][1]
    assert entry["previous_job_ids"] == [jobs[0]["job_id"]] and entry["job_id"] != jobs[0]["job_id"]
    assert "points_per_job" not in entry and entry["stdout"].endswith(f"{entry['job_id']}_0_log.out")
    waited = run_cli([str(sweep), "--wait"], work, fast=False, check=False, module="sesemi.status", timeout=300)
    assert "3 jobs: 2 completed, 1 failed" in waited.stdout  # the same point, alone, fails the same way
    assert "Invalid learning rate" in Path(entry["stderr"]).read_text() + (sweep / "1" / "train.log").read_text()


def test_an_asynchronous_sweeps_workers_are_not_packed(tmp_path: Path):
    proc = run_cli(
        [
            "-m",
            "hparams_search=digits_fixmatch",
            "hydra/sweeper=optuna_async",
            "hydra.sweeper.workers=1",
            "hydra.sweeper.n_trials=2",
            "hydra/launcher=local",
            "hydra.launcher.points_per_job=2",
        ],
        tmp_path,
        check=False,
    )
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "sesemi: error: hydra.launcher.points_per_job: is 2, but the asynchronous sweeper's workers" in proc.stderr
    assert not list(tmp_path.glob("runs/sweeps/*/workers/*/*/status.json"))  # no worker started


@pytest.mark.skipif(shutil.which("srun") is None, reason="a SLURM dry run needs srun (submitit asks for it)")
def test_the_dry_run_shows_the_jobs_and_their_points(tmp_path: Path):
    proc = run_cli(
        [
            "-m",
            "hydra/launcher=slurm_cpu",
            "run.id=packed",
            "optimizer.lr=0.01,0.02,0.03,0.04",
            "hydra.launcher.points_per_job=3",
            "hydra.launcher.dry_run=true",
        ],
        tmp_path,
    )
    out = proc.stdout
    assert "4 sweep points as 2 job(s) in 1 submission(s)" in out
    assert "job array of 2, 3 points per job (sweep jobs [0, 1, 2, 3])" in out
    assert "#SBATCH --array=0-1%2" in out and "#SBATCH --cpus-per-task=2" in out
    assert "array job 0: sweep jobs [0, 1, 2]" in out and "array job 1: sweep jobs [3]" in out
    assert "points_per_job=3 (one process each) point_gpus=split" in out
    assert not (tmp_path / "runs").exists()


def test_a_packed_ddp_point_is_refused_before_submission(tmp_path: Path):
    proc = run_cli(
        [
            "-m",
            "hydra/launcher=local",
            "run.devices=2",
            "run.accelerator=cpu",
            "optimizer.lr=0.01,0.1",
            "hydra.launcher.points_per_job=2",
        ],
        tmp_path,
        check=False,
    )
    assert proc.returncode == 2
    assert "hydra.launcher.points_per_job" in proc.stderr and "one process each" in proc.stderr
    assert not list(tmp_path.glob("runs/*/*/*/status.json"))


def _processes_running(marker: str) -> list[int]:
    """The pids whose command line names ``marker`` (the points' processes of this test's own job)."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and marker in (proc / "cmdline").read_bytes().decode(errors="replace"):
                pids.append(int(proc.name))
        except OSError:
            continue
    return pids


@pytest.mark.slow
def test_a_sigterm_while_the_points_start_stops_each_at_its_first_step(tmp_path: Path):
    """SIGTERM to each point's process the moment it starts (long before its run owns the signal: imports, data,
    model): held, then handed to the run, which stops before its first step, cancelled, with nothing to checkpoint
    (the next attempt starts from the beginning); never a point killed before its run could record anything."""
    launch = subprocess.Popen(
        cli(
            [
                "-m",
                "hydra/launcher=local",
                "run.id=early",
                "run.accelerator=cpu",
                "optimizer.lr=0.01,0.02",
                "hydra.launcher.points_per_job=2",
            ]
        ),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    signalled: set[int] = set()
    deadline = time.monotonic() + 180
    while len(signalled) < 2 and time.monotonic() < deadline and launch.poll() is None:
        for spec in tmp_path.glob("runs/early/*/.submitit/*/*_point*_spec.json"):
            for pid in set(_processes_running(str(spec))) - signalled:
                os.kill(pid, signal.SIGTERM)
                signalled.add(pid)
        time.sleep(0.02)
    output = launch.communicate(timeout=300)[0]
    assert len(signalled) == 2, output[-3000:]
    (sweep,) = (tmp_path / "runs" / "early").iterdir()
    for point in ("0", "1"):
        status = json.loads((sweep / point / "status.json").read_text())
        assert status["state"] == "cancelled" and status["signal"] == "SIGTERM", status
        assert status["stop_reason"].startswith("SIGTERM at step 0 "), status["stop_reason"]  # before step 1
        assert status["stop_reason"].endswith("; nothing trained yet"), status["stop_reason"]
        assert not (sweep / point / "checkpoints").exists()  # a checkpoint of step 0 would hold nothing
    assert "2 jobs: 2 cancelled" in output and "point 0 of this job ended without a result (exit code 143)" in output
    assert launch.returncode == 1


@pytest.mark.slow
def test_a_synchronous_optuna_sweeps_batch_runs_packed(tmp_path: Path):
    """hydra/sweeper=optuna_sync with 2 trials per batch and 2 points per job: one local job runs both trials, each
    a COMPLETE trial of the study in its own trial dir."""
    proc = run_cli(
        [
            "-m",
            "hparams_search=digits_fixmatch",
            "hydra.sweeper.n_trials=2",
            "hydra.sweeper.n_jobs=2",
            "hydra/launcher=local",
            "hydra.launcher.points_per_job=2",
        ],
        tmp_path,
        timeout=420,
    )
    assert "submitted 2 point(s) in 1 job(s)" in proc.stdout + proc.stderr
    sweep = tmp_path / "runs" / "sweeps" / "digits_fixmatch"
    jobs = json.loads((sweep / "jobs.json").read_text())["jobs"]
    assert [Path(j["run_dir"]).name for j in jobs] == ["trial_0000", "trial_0001"]
    assert len({j["job_id"] for j in jobs}) == 1
    import optuna

    from sesemi.sweep.storage import make_storage

    study = optuna.load_study(study_name="digits_fixmatch", storage=make_storage(None, sweep))
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    for trial in study.trials:
        metrics = json.loads((sweep / f"trial_{trial.number:04d}" / "metrics.json").read_text())
        assert metrics["objective"]["value"] == pytest.approx(trial.value)
