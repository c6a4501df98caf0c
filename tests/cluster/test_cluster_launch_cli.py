"""Launching without a cluster: the dry run, the resource checks, and multi-process DDP inside local sweeps."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from cluster_testkit import (
    DOC_COMMANDS,
    MYCLUSTER_PROFILE,
    Launch,
    rank_records,
    rankcheck_overrides,
    read_json,
    subdirs,
    the_sweep_dir,
)
from conftest import run_cli

pytestmark = pytest.mark.slow  # real training runs through the CLI (the fast tier is -m "not slow")


def test_dry_run_prints_the_jobs_resources_and_sbatch_script_and_submits_nothing(workdir: Path):
    # The first command, with the dry run on (no SLURM needed).
    proc = run_cli(DOC_COMMANDS["dry_run"], workdir, fast=False)
    out = proc.stdout
    assert "sesemi dry run: 3 job(s) in 1 submission(s) to slurm; nothing submitted." in out
    assert "job array of 3 (sweep jobs [0, 1, 2])" in out
    for directive in (
        "--array=0-2%3",
        "--ntasks-per-node=4",
        "--gpus-per-node=4",
        "--nodes=1",
        "--partition=gpu",
        "--cpus-per-task=8",
        "--time=240",
        "--signal=USR2@120",
        "--job-name=lr_scan.0-2",
    ):
        assert f"#SBATCH {directive}" in out, directive
    assert "srun --unbuffered" in out and "-u -m sesemi.cluster.job -u -m submitit.core._submit" in out
    for num, lr in enumerate(("0.01", "0.03", "0.1")):
        assert f"#{num}: run.id=lr_scan optimizer.lr={lr} run.devices=4" in out
        assert "runs/lr_scan/" in out and f"/{num}\n" in out
    assert "resources: " in out and "tasks_per_node=4" in out and "gpus_per_node=4" in out
    assert not (workdir / "runs").exists()  # nothing submitted, nothing left behind


def test_dry_run_of_a_multi_node_job(workdir: Path):
    proc = run_cli(DOC_COMMANDS["dry_run_multinode"], workdir, fast=False)
    for directive in ("--nodes=2", "--ntasks-per-node=4", "--gpus-per-node=4"):
        assert f"#SBATCH {directive}" in proc.stdout
    assert "1 job(s) in 1 submission(s)" in proc.stdout and "--array" not in proc.stdout


def test_a_cluster_profile_of_ones_own_in_the_workspace(workdir: Path):
    profile = workdir / "configs" / "hydra" / "launcher" / "mycluster.yaml"
    profile.parent.mkdir(parents=True)
    profile.write_text(MYCLUSTER_PROFILE)
    proc = run_cli(DOC_COMMANDS["dry_run_profile"], workdir, fast=False)
    for line in (
        "#SBATCH --partition=a100",
        "#SBATCH --account=mylab",
        "#SBATCH --mail-type=END",
        "#SBATCH --gpus-per-node=2",
        "module load cuda/12.1",
    ):
        assert line in proc.stdout, line


def test_sbatch_options_on_the_command_line_and_jobs_named_after_the_sweep(workdir: Path):
    args = ["-m", "hydra/launcher=slurm_cpu", "run.id=scan", "optimizer.lr=0.1,0.2"]
    proc = run_cli(
        [*args, "hydra.launcher.additional_parameters={mail-type:END}", "hydra.launcher.dry_run=true"], workdir
    )
    assert "#SBATCH --mail-type=END" in proc.stdout and "#SBATCH --job-name=scan.0-1" in proc.stdout


def test_a_detached_sync_optuna_sweep_is_refused_before_submission(workdir: Path):
    args = ["-m", "hydra/launcher=slurm_cpu", "hydra/sweeper=optuna_sync", "hydra.launcher.wait=false"]
    proc = run_cli(args, workdir, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "sesemi: error: hydra.launcher.wait: is false, but the synchronous sweeper samples each batch" in proc.stderr
    assert "use hydra/sweeper=optuna_async" in proc.stderr


def test_a_detached_sweep_of_hydras_optuna_sweeper_is_refused_before_submission(workdir: Path):
    args = ["-m", "hydra/launcher=slurm_cpu", "hydra/sweeper=optuna", "hydra.launcher.wait=false", "optimizer.lr=0.1"]
    proc = run_cli(args, workdir, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "sesemi: error: hydra.launcher.wait: is false, but this sweeper chooses its next points" in proc.stderr


def test_dry_run_splits_a_sweep_over_devices_into_one_submission_per_resource_set(workdir: Path):
    proc = run_cli(DOC_COMMANDS["dry_run_devices"], workdir, fast=False)
    assert "2 job(s) in 2 submission(s)" in proc.stdout
    assert "#SBATCH --ntasks-per-node=1" in proc.stdout and "#SBATCH --ntasks-per-node=2" in proc.stdout
    assert "--gpus-per-node" not in proc.stdout


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            DOC_COMMANDS["mismatch"][1:-1],
            ["hydra.launcher.tasks_per_node: is 4 but run.devices=2", "set run.devices=4"],
        ),
        (
            ["hydra/launcher=slurm", "run.num_nodes=2", "hydra.launcher.nodes=1"],
            ["hydra.launcher.nodes: is 1 but run.num_nodes=2"],
        ),
        (
            ["hydra/launcher=slurm", "run.devices=2", "hydra.launcher.gpus_per_node=1"],
            ["hydra.launcher.gpus_per_node: is 1 but run.devices=2"],
        ),
        (
            ["hydra/launcher=slurm_cpu", "hydra.launcher.gpus_per_node=1"],
            ["hydra.launcher.gpus_per_node: is 1: hydra/launcher=slurm_cpu is the CPU-only profile"],
        ),
        (["hydra/launcher=slurm_cpu", "run.accelerator=gpu"], ["run.accelerator: is gpu on the CPU-only profile"]),
        (["hydra/launcher=local", "run.devices=2", "run.strategy=ddp_spawn"], ["run.strategy: is ddp_spawn"]),
        (["hydra/launcher=slurm_cpu", "run.devices=auto"], ["run.devices: is 'auto', but a cluster job asks for"]),
    ],
    ids=["tasks", "nodes", "gpus", "cpu-profile-gpus", "cpu-profile-accelerator", "spawn", "devices-auto"],
)
def test_a_resource_mismatch_is_refused_before_submission_naming_the_keys(workdir: Path, args, expected):
    proc = run_cli(["-m", *args, "optimizer.lr=0.01,0.1"], workdir, fast=False, check=False)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "sesemi: error: the sweep's resources do not fit its run config; nothing was submitted" in proc.stderr
    assert "sweep jobs #0, #1:" in proc.stderr
    for text in expected:
        assert text in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (workdir / "runs").exists()


@pytest.fixture(scope="module")
def ddp_launches(tmp_path_factory: pytest.TempPathFactory):
    """The three local DDP launches, started together (each is mostly process start-up) and checked one by one."""
    root = tmp_path_factory.mktemp("local_ddp")
    started = {
        name: Launch(
            name,
            root / name,
            [*DOC_COMMANDS[name], *rankcheck_overrides(root / name / "ranks")],
            timeout=400,
            ranks_dir=root / name / "ranks",
        )
        for name in ("local_sweep_ddp", "local_launcher", "single_ddp")
    }
    yield started
    for launch in started.values():
        if launch.proc.poll() is None:
            launch.proc.kill()
            launch.proc.wait()


def _finished(launch: Launch) -> str:
    rc, output = launch.wait()
    assert rc == 0, f"{launch.name} exited {rc}:\n{output[-6000:]}"
    return output


def _check_ddp_sweep(workdir: Path, ranks_dir: Path, run_id: str, lrs: tuple[float, ...], environment: str | None):
    sweep_dir = the_sweep_dir(workdir, run_id)
    jobs = [str(n) for n in range(len(lrs))]
    assert [d for d in subdirs(sweep_dir) if d not in (".code", ".submitit")] == jobs  # no stray run dirs
    ranks = rank_records(ranks_dir)
    assert len(ranks) == 2 * len(lrs)
    for num, lr in zip(jobs, lrs):
        run_dir = sweep_dir / num
        mine = [r for r in ranks if r["run_dir"] == str(run_dir)]
        assert [r["rank"] for r in mine] == [0, 1] and {r["world_size"] for r in mine} == {2}
        assert {r["lr"] for r in mine} == {lr}
        assert mine[0]["config"] == mine[1]["config"] and mine[0]["weights"] == mine[1]["weights"]
        assert {r["environment"] for r in mine} == {environment}
        assert read_json(run_dir / "status.json")["state"] == "completed"
        assert read_json(run_dir / "metrics.json")["global_step"] == 6
        assert yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text())["optimizer"]["lr"] == lr
    return sweep_dir


def test_local_sweep_whose_jobs_are_two_process_ddp(ddp_launches):
    launch = ddp_launches["local_sweep_ddp"]
    _finished(launch)
    sweep_dir = _check_ddp_sweep(launch.workdir, launch.ranks_dir, "local_ddp", (0.01, 0.1), "LightningEnvironment")
    # Every rank is a fresh process (not the sweep's process); rank 0 logs into the job's log file.
    assert len({r["pid"] for r in rank_records(launch.ranks_dir)}) == 4
    assert "Initializing distributed: GLOBAL_RANK: 0, MEMBER: 1/2" in (sweep_dir / "0" / "train.log").read_text()


def test_submitit_local_launcher_job_with_two_tasks_is_two_process_ddp(ddp_launches):
    launch = ddp_launches["local_launcher"]
    output = _finished(launch)
    sweep_dir = _check_ddp_sweep(launch.workdir, launch.ranks_dir, "sublocal", (0.03,), "SubmititEnvironment")
    assert "1 jobs: 1 completed" in output
    assert (sweep_dir / "summary.md").is_file() and (sweep_dir / "jobs.json").is_file()


def test_single_run_with_two_devices_is_ddp_in_one_run_dir(ddp_launches):
    launch = ddp_launches["single_ddp"]
    _finished(launch)
    (run_dir,) = [launch.workdir / "runs" / "default" / d for d in subdirs(launch.workdir / "runs" / "default")]
    ranks = rank_records(launch.ranks_dir)
    assert [r["rank"] for r in ranks] == [0, 1]
    assert {r["run_dir"] for r in ranks} == {str(run_dir)}
    assert ranks[0]["config"] == ranks[1]["config"] and ranks[0]["weights"] == ranks[1]["weights"]
    assert read_json(run_dir / "status.json")["state"] == "completed"
