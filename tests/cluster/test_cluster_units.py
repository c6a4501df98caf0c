"""Pieces of the cluster launching on their own: launcher configs, resource checks, strategy choice, restarts."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import pytest
from lightning_fabric.plugins.environments import LightningEnvironment, SLURMEnvironment
from omegaconf import OmegaConf
from pytorch_lightning.strategies import DDPStrategy

import sesemi.cluster.launcher  # noqa: F401  (registers the launcher schemas, as Hydra's plugin discovery does)
from sesemi import compose
from sesemi.cluster import environment as launch
from sesemi.cluster import summary
from sesemi.cluster.signals import StopOnSignal, restart_checkpoint, submitit_signal
from sesemi.cluster.validate import check_job
from sesemi.errors import ConfigError
from sesemi.rundir import RunRecord, read_status
from sesemi.runtime import RunStopped
from sesemi.sweepdir import SweepDir

SLURM_VARS = (
    "SLURM_NTASKS",
    "SLURM_JOB_NAME",
    "SLURM_JOB_ID",
    "SLURM_NTASKS_PER_NODE",
    "SLURM_NNODES",
    "SLURM_PROCID",
    "SLURM_LOCALID",
    "SLURM_NODEID",
    "SLURM_NODELIST",
    "SUBMITIT_EXECUTOR",
    "SUBMITIT_LOCAL_NTASKS",
    "LOCAL_RANK",
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch):
    for var in SLURM_VARS:
        monkeypatch.delenv(var, raising=False)


def launcher_config(*overrides: str):
    return compose(list(overrides), return_hydra_config=True)


def test_slurm_launcher_resources_follow_the_run_config():
    cfg = launcher_config("hydra/launcher=slurm", "run.devices=4", "run.num_nodes=2", "run.id=scan")
    launcher = cfg.hydra.launcher
    assert launcher._target_ == "hydra_plugins.sesemi_plugins.SlurmLauncher"
    assert (launcher.tasks_per_node, launcher.gpus_per_node, launcher.nodes) == (4, 4, 2)
    assert launcher.name is None and launcher.profile == "gpu" and launcher.dry_run is False and launcher.wait is True
    assert launcher.submitit_folder == ".submitit/%j"  # below the sweep dir; no second sweep dir claimed
    for key in (
        "partition",
        "account",
        "qos",
        "constraint",
        "setup",
        "additional_parameters",
        "array_parallelism",
        "cpus_per_task",
        "mem_gb",
        "timeout_min",
        "signal_delay_s",
        "max_num_timeout",
    ):
        assert key in launcher, key


def test_cpu_and_local_profiles():
    cpu = launcher_config("hydra/launcher=slurm_cpu", "run.devices=2").hydra.launcher
    assert cpu.profile == "cpu" and cpu.gpus_per_node is None and cpu.tasks_per_node == 2
    assert cpu._target_ == "hydra_plugins.sesemi_plugins.SlurmLauncher"
    local = launcher_config("hydra/launcher=local", "run.devices=2").hydra.launcher
    assert local._target_ == "hydra_plugins.sesemi_plugins.LocalLauncher" and local.tasks_per_node == 2


def _keys(problems: list[ConfigError]) -> list[str]:
    return [p.key for p in problems]


def test_resource_checks():
    ok = {"tasks_per_node": 2, "nodes": 1, "gpus_per_node": 2}
    run = {"devices": 2, "num_nodes": 1, "accelerator": "auto", "strategy": "auto"}
    assert check_job(ok, run, profile="gpu", executor="slurm") == []
    assert _keys(check_job({**ok, "tasks_per_node": 4}, run, profile="gpu", executor="slurm")) == [
        "hydra.launcher.tasks_per_node"
    ]
    assert _keys(check_job({**ok, "nodes": 2}, run, profile="gpu", executor="slurm")) == ["hydra.launcher.nodes"]
    assert _keys(check_job(ok, {**run, "devices": "auto"}, profile="gpu", executor="slurm")) == ["run.devices"]
    assert _keys(check_job(ok, {**run, "accelerator": "cpu"}, profile="gpu", executor="slurm")) == [
        "hydra.launcher.gpus_per_node"
    ]
    cpu = {"tasks_per_node": 2, "nodes": 1, "gpus_per_node": None}
    assert check_job(cpu, run, profile="cpu", executor="slurm") == []
    assert _keys(check_job({**cpu, "gres": "gpu:1"}, run, profile="cpu", executor="slurm")) == ["hydra.launcher.gres"]
    extra = {**cpu, "additional_parameters": {"gpus-per-node": 1}}
    assert _keys(check_job(extra, run, profile="cpu", executor="slurm")) == [
        "hydra.launcher.additional_parameters.gpus-per-node"
    ]
    assert _keys(check_job(cpu, {**run, "num_nodes": 2}, profile="local", executor="local")) == [
        "hydra.launcher.nodes",
        "run.num_nodes",
    ]


def _run(**values):
    return OmegaConf.create({"devices": 1, "num_nodes": 1, "accelerator": "cpu", "strategy": "auto", **values})


def test_strategy_for_a_single_run():
    assert launch.resolve_strategy(_run()) == "auto"
    assert launch.resolve_strategy(_run(devices=2)) == "ddp"  # Lightning starts rank 1 (argv + hydra.run.dir)
    assert launch.resolve_plugins(_run()) == []


def test_strategy_inside_slurm_tasks(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SLURM_NTASKS", "2")
    monkeypatch.setenv("SLURM_NTASKS_PER_NODE", "2")
    monkeypatch.setenv("SLURM_JOB_NAME", "sesemi_x")
    strategy = launch.resolve_strategy(_run(devices=2))
    assert isinstance(strategy, DDPStrategy)
    environment = strategy.cluster_environment
    assert isinstance(environment, SLURMEnvironment) and environment.auto_requeue is False
    with pytest.raises(ConfigError, match=r"run\.devices.*this SLURM job has 2 tasks"):
        launch.resolve_strategy(_run(devices=4))
    with pytest.raises(ConfigError, match=r"run\.strategy"):
        launch.resolve_strategy(_run(devices=2, strategy="ddp_spawn"))


def test_one_process_in_slurm_keeps_lightnings_requeue_off(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SLURM_NTASKS", "1")
    monkeypatch.setenv("SLURM_JOB_NAME", "sesemi_x")
    assert launch.resolve_strategy(_run()) == "auto"
    (plugin,) = launch.resolve_plugins(_run())
    assert isinstance(plugin, SLURMEnvironment) and plugin.auto_requeue is False
    # devices=2 in a one-task allocation: local processes, not SLURM tasks that do not exist.
    strategy = launch.resolve_strategy(_run(devices=2))
    assert isinstance(strategy.cluster_environment, LightningEnvironment)


def test_strategy_inside_submitit_local_tasks(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "local")
    monkeypatch.setenv("SUBMITIT_LOCAL_NTASKS", "2")
    monkeypatch.setenv("SUBMITIT_LOCAL_JOB_ID", "123")
    monkeypatch.setenv("SUBMITIT_LOCAL_GLOBALID", "1")
    monkeypatch.setenv("SUBMITIT_LOCAL_LOCALID", "1")
    strategy = launch.resolve_strategy(_run(devices=2))
    environment = strategy.cluster_environment
    assert isinstance(environment, launch.SubmititEnvironment)
    assert (environment.global_rank(), environment.local_rank(), environment.world_size()) == (1, 1, 2)
    assert environment.creates_processes_externally
    assert environment.main_port == launch.SubmititEnvironment().main_port  # same port in every task


def test_restart_checkpoint_only_for_the_same_slurm_job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"x")
    (tmp_path / "status.json").write_text(json.dumps({"attempts": [{"slurm_job_id": "42_1"}]}))
    assert restart_checkpoint(tmp_path) is None  # not in a job
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")
    monkeypatch.setenv("SLURM_JOB_ID", "43")
    assert restart_checkpoint(tmp_path) is None  # another job: never resume someone else's run
    monkeypatch.setenv("SLURM_JOB_ID", "42_1")
    assert restart_checkpoint(tmp_path) == str(tmp_path / "checkpoints" / "last.ckpt")
    (tmp_path / "checkpoints" / "last.ckpt").unlink()
    assert restart_checkpoint(tmp_path) is None  # requeued before its first checkpoint: starts over


def test_an_array_task_is_recorded_and_recognised_as_its_own_job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """One task of an array has the array's number as ``$SLURM_JOB_ID`` (``scontrol requeue`` of it requeues every
    task): the task is recorded as ``<array>_<task>`` and a requeue of it finds its own attempts under that name."""
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "42")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "1")
    RunRecord(tmp_path).start()
    assert read_status(tmp_path)["attempts"][0]["slurm_job_id"] == "42_1"
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"x")
    assert restart_checkpoint(tmp_path) == str(tmp_path / "checkpoints" / "last.ckpt")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "0")  # task 0 of the same array: another job's run dir
    assert restart_checkpoint(tmp_path) is None


def test_signal_handler_only_notes_the_signal(tmp_path: Path, monkeypatch):
    from sesemi import runtime
    from sesemi.sweep import stop

    monkeypatch.setattr(runtime, "_RECEIVED", set())  # this process's record of signals, fresh for the test
    callback = StopOnSignal(str(tmp_path), slurm=True)
    callback._install()
    try:
        for sig in (signal.SIGTERM, signal.SIGINT, submitit_signal()):
            assert signal.getsignal(sig) == callback._note
        assert not stop.received()
        callback._note(signal.SIGTERM, None)
        callback._note(submitit_signal(), None)
        callback._note(signal.SIGTERM, None)
        assert callback.received == submitit_signal()  # the requeueing signal wins
        # A sweep worker whose trial got SIGTERM before the trial's first step (the run's handler took it, not the
        # sweep's wrapper) still knows its job is ending: it takes no new trial.
        assert runtime.signal_received(signal.SIGTERM) and stop.received()
    finally:
        callback._restore()
    assert signal.getsignal(signal.SIGTERM) != callback._note
    assert isinstance(RunStopped("x", 143), SystemExit) and not isinstance(RunStopped("x", 143), Exception)


def test_a_local_run_does_not_take_submitits_signal(tmp_path: Path):
    callback = StopOnSignal(str(tmp_path))
    before = signal.getsignal(submitit_signal())
    interrupt = signal.getsignal(signal.SIGINT)  # whatever the process had: restored as it was
    callback._install()
    try:
        assert signal.getsignal(submitit_signal()) == before
        assert signal.getsignal(signal.SIGINT) == callback._note
    finally:
        callback._restore()
    assert signal.getsignal(signal.SIGINT) == interrupt


def test_summary_table_lists_failed_jobs(tmp_path: Path):
    good, bad = tmp_path / "0", tmp_path / "1"
    for d in (good, bad):
        d.mkdir()
    (good / "status.json").write_text(json.dumps({"state": "completed", "restarts": 1}))
    (good / "metrics.json").write_text(json.dumps({"objective": {"value": 0.5}}))
    (bad / "status.json").write_text(json.dumps({"state": "failed", "restarts": 0, "error": "ValueError: boom"}))
    jobs = [
        {"num": 0, "job_id": "7_0", "run_dir": str(good), "stdout": "o0", "stderr": "e0"},
        {"num": 1, "job_id": "7_1", "run_dir": str(bad), "stdout": "o1", "stderr": "e1"},
        {"num": 2, "job_id": "7_2", "run_dir": str(tmp_path / "2"), "stdout": "o2", "stderr": "e2"},
    ]
    (tmp_path / "jobs.json").write_text(json.dumps({"executor": "local", "jobs": jobs}))
    rows = summary.collect(tmp_path)
    assert [(r["state"], r["objective"], r["restarts"]) for r in rows] == [
        ("completed", "0.5000", 1),
        ("failed", "", 0),
        ("missing", "", ""),
    ]
    text = summary.format_table(rows, base=tmp_path)
    assert "3 jobs: 1 completed, 1 failed, 1 missing" in text
    assert "- job 1 (7_1) failed: ValueError: boom" in text and "- job 2 (7_2) missing" in text
    csv_path, _ = summary.write(SweepDir(tmp_path), rows)
    assert csv_path.read_text().splitlines()[0] == ",".join(summary.COLUMNS)
    assert summary.main([str(tmp_path), "--no-write"]) == 1  # not all completed


def _ended_job(sweep_dir: Path, num: int, state: str) -> Any:
    """A launcher's plan of job ``num`` whose run dir says ``state`` (the job itself has ended)."""
    from types import SimpleNamespace

    from sesemi.cluster.plan import JobPlan

    run_dir = sweep_dir / str(num)
    run_dir.mkdir()
    (run_dir / "status.json").write_text(json.dumps({"state": state, "restarts": 0}))
    paths = SimpleNamespace(stdout=sweep_dir / f"{num}.out", stderr=sweep_dir / f"{num}.err")
    handle = SimpleNamespace(job_id=str(100 + num), paths=paths, state="FINISHED")
    return JobPlan(num, [f"optimizer.lr=0.{num + 1}"], {}, run_dir, handle=handle)


def test_jobs_file_and_summary_accumulate_over_launcher_batches(tmp_path: Path, capsys: pytest.CaptureFixture):
    """Sweepers such as Optuna call the launcher once per batch, into the same sweep dir."""
    from sesemi.cluster.follow import summarize
    from sesemi.sweepdir import SweepDir

    sweep = SweepDir(tmp_path)
    summarize(sweep, [_ended_job(tmp_path, 0, "completed")], {}, executor_kind="local", profile="local")
    summarize(
        sweep, [_ended_job(tmp_path, 1, "failed")], {1: "ValueError: boom"}, executor_kind="local", profile="local"
    )
    jobs = json.loads((tmp_path / "jobs.json").read_text())["jobs"]
    assert [(j["num"], j["job_id"], j["job_state"]) for j in jobs] == [(0, "100", "FINISHED"), (1, "101", "FINISHED")]
    rows = summary.collect(tmp_path)
    assert [(r["job"], r["state"], r["error"]) for r in rows] == [
        (0, "completed", ""),
        (1, "failed", "ValueError: boom"),
    ]
    out = capsys.readouterr().out
    assert "this batch; all 2 jobs of the sweep are in it" in out and "- job 1 (101) failed: ValueError: boom" in out


def test_launches_of_one_sweep_at_the_same_time_record_every_job(tmp_path: Path, capsys: pytest.CaptureFixture):
    """The asynchronous sweeper launches each worker from a thread of its own, at the same time: every job is in
    jobs.json and the summary, and no launch fails on another's write (it once did: a worker job then counted as
    ended while it ran, and a needless third worker was submitted)."""
    import threading

    from sesemi.cluster.follow import summarize
    from sesemi.cluster.submission import ledger_entry
    from sesemi.sweepdir import SweepDir

    sweep = SweepDir(tmp_path)
    plans = [_ended_job(tmp_path, num, "completed") for num in range(8)]
    start = threading.Barrier(len(plans))
    errors: list[BaseException] = []

    def launch(plan: Any) -> None:
        start.wait()
        try:
            for _ in range(20):
                sweep.record_jobs([ledger_entry(plan)], executor="local", profile="local")
                summarize(sweep, [plan], {}, executor_kind="local", profile="local")
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=launch, args=(plan,)) for plan in plans]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    capsys.readouterr()
    assert errors == []
    assert [j["num"] for j in json.loads((tmp_path / "jobs.json").read_text())["jobs"]] == list(range(8))
    assert [r["job"] for r in summary.collect(tmp_path)] == list(range(8))
    assert not list(tmp_path.glob(".*.tmp"))  # no temporary file left behind


def test_the_launcher_names_the_run_dirs_the_jobs_really_use(tmp_path: Path):
    from sesemi.cluster.messages import run_dirs_text
    from sesemi.cluster.plan import JobPlan

    grid = [JobPlan(n, [], {}, tmp_path / str(n)) for n in range(3)]
    assert run_dirs_text(grid) == f"{tmp_path}/<job num>"
    workers = [JobPlan(n, [], {}, tmp_path / "workers" / "s1" / f"w{n}") for n in range(6)]
    text = run_dirs_text(workers)
    assert text.endswith("workers/s1/w3 and 2 more") and "workers/s1/w0, " in text
