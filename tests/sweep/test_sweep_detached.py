"""A detached asynchronous Optuna sweep (``hydra.launcher.wait=false``): the command submits the workers as one SLURM
job array and exits; the workers run the whole budget on their own, ``sesemi.status`` and ``sesemi.sweep_report``
follow it. And the refusals, before anything is created."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from conftest import read_json, run_cli, sacct
from faults import FAULT, install_slow
from optuna.trial import TrialState

from sesemi.errors import ConfigError
from sesemi.sweep.storage import checked_spec, make_storage

ROOT = Path(__file__).parents[2]
# The command docs/cluster.md and docs/sweeps.md show; the test runs it after FAULT's tiny settings (loader workers
# ON), with one test-only addition after it (every job fits the test cluster's CPUs).
DETACHED_ASYNC = [
    "-m",
    "hparams_search=digits_fixmatch",
    "hydra/sweeper=optuna_async",
    "hydra.sweeper.workers=2",
    "hydra.sweeper.n_trials=4",
    "hydra/launcher=slurm_cpu",
    "hydra.launcher.partition=debug",
    "hydra.launcher.wait=false",
]
SWEEP_DIR = "runs/sweeps/digits_fixmatch"


def _cli(module: str, args: list[str], cwd: Path, timeout: float = 420) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


def test_the_docs_show_the_command_this_test_runs():
    command = shlex.join(["python", "-m", "sesemi.train", *DETACHED_ASYNC])
    for doc in ("cluster.md", "sweeps.md"):
        assert command in (ROOT / "docs" / doc).read_text(), doc


def load(sweep: Path) -> optuna.Study:
    info = json.loads((sweep / "sweep.json").read_text())
    return optuna.load_study(study_name=info["study_name"], storage=make_storage(None, sweep))


def submit(workdir: Path, extra: list[str] = ()) -> tuple[subprocess.Popen, str, str, float, list[dict]]:
    """The documented command (after FAULT, before ``extra``); returns once it exited, with its output, how long
    it took and the jobs it submitted."""
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "sesemi.train", *FAULT, *DETACHED_ASYNC, "hydra.launcher.cpus_per_task=1", *extra],
        cwd=workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    stdout, stderr = proc.communicate(timeout=180)
    jobs_file = workdir / SWEEP_DIR / "jobs.json"
    jobs = read_json(jobs_file)["jobs"] if jobs_file.is_file() else []
    return proc, stdout, stderr, time.monotonic() - started, jobs


needs_slurm = pytest.mark.skipif(shutil.which("sinfo") is None, reason="no SLURM client (slurm_cluster.sh start)")


@pytest.mark.slow
@pytest.mark.slurm
@needs_slurm
def test_a_detached_async_sweep_finishes_its_budget_with_the_submitting_process_gone(tmp_path: Path):
    started = time.monotonic()
    proc, stdout, stderr, seconds, jobs = submit(tmp_path)
    sweep = tmp_path / SWEEP_DIR
    ids = [j["job_id"] for j in jobs]
    try:
        assert proc.returncode == 0, stderr[-4000:]
        assert not Path(f"/proc/{proc.pid}").exists()  # the submitting process is gone
        states = sacct(ids)
        assert set(states.values()) <= {"PENDING", "RUNNING"}, (states, seconds)  # it waited for nothing
        print(f"submitted in {seconds:.1f} s; jobs {states}\n{stdout}")
        assert len(ids) == 2 and len({i.split("_")[0] for i in ids}) == 1  # the 2 workers, one job array
        assert [Path(j["run_dir"]).name for j in jobs] == ["w0", "w1"]
        assert f"sesemi: submitted 2 job(s) to slurm: {ids[0]}, {ids[1]}; not waiting" in stdout
        assert f"follow them:   python -m sesemi.status {SWEEP_DIR} --wait" in stdout
        assert f"the study so far: python -m sesemi.sweep_report {SWEEP_DIR}" in stdout
        assert "Traceback" not in stderr

        now = _cli("sesemi.status", [SWEEP_DIR], tmp_path)  # while the workers pend or run
        assert now.returncode == 1, now.stdout + now.stderr
        assert now.stdout.startswith("job ") and ids[0] in now.stdout and ids[1] in now.stdout
        while not list(sweep.glob("trial_*/metrics.json")):  # the report of a sweep that runs
            assert time.monotonic() - started < 400, _cli("sesemi.status", [SWEEP_DIR], tmp_path).stdout
            time.sleep(1)
        running = _cli("sesemi.sweep_report", [SWEEP_DIR], tmp_path)
        assert running.returncode == 0, running.stdout + running.stderr
        assert "COMPLETE" in running.stdout

        follow = _cli("sesemi.status", [SWEEP_DIR, "--wait", "--interval", "2"], tmp_path)
        assert follow.returncode == 0, follow.stdout + follow.stderr
    finally:
        if ids:
            subprocess.run(["scancel", *ids], capture_output=True, check=False)
    print(follow.stdout)
    assert follow.stdout.splitlines()[-1] == "6 jobs: 6 completed"  # 2 workers, 4 trials
    assert set(sacct(ids).values()) == {"COMPLETED"}

    trials = load(sweep).get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 4  # exactly the budget
    assert len({json.dumps(t.params, sort_keys=True) for t in trials}) == 4  # no parameter set twice
    # Both workers took trials, each recorded as the array task it ran in (what scancel/scontrol address alone).
    assert {t.user_attrs["slurm_job_id"] for t in trials} == set(ids)
    for t in trials:
        run_dir = Path(t.user_attrs["run_dir"])
        assert run_dir == sweep / f"trial_{t.number:04d}"
        assert read_json(run_dir / "status.json")["state"] == "completed"
        assert read_json(run_dir / "metrics.json")["objective"]["value"] == t.value
        assert f"trial_{t.number:04d}" in follow.stdout
    workers = [Path(j["run_dir"]) for j in jobs]
    assert sum(read_json(w / "metrics.json")["trials"] for w in workers) == 4
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert results["trials"] == {"COMPLETE": 4}
    assert results["best_value"] == max(t.value for t in trials)

    report = _cli("sesemi.sweep_report", [SWEEP_DIR], tmp_path)
    assert report.returncode == 0, report.stdout + report.stderr
    print(report.stdout)
    assert "4 trials, 4 complete" in report.stdout


@pytest.mark.slow
@pytest.mark.slurm
@needs_slurm
def test_a_requeued_worker_job_continues_its_trial_and_the_detached_sweep_runs_its_budget(tmp_path: Path):
    """``scontrol requeue`` of a worker job mid-trial (SIGTERM to the job's processes, then SLURM starts it again):
    the trial checkpoints and stays running in the study; the requeued job is a worker again and continues that
    trial first, as itself, in its own run dir; the budget completes and ``sesemi.status --wait`` says so."""
    slow = [*install_slow(tmp_path)[:-1], "+callbacks.slow.seconds=1.0"]  # per step, a job's first attempt only
    proc, _, stderr, _, jobs = submit(tmp_path, ["trainer.max_steps=12", *slow])
    assert proc.returncode == 0, stderr[-4000:]
    sweep = tmp_path / SWEEP_DIR
    ids = [j["job_id"] for j in jobs]
    victim = None
    try:
        deadline = time.monotonic() + 400
        while victim is None:
            assert time.monotonic() < deadline, _cli("sesemi.status", [SWEEP_DIR], tmp_path).stdout
            time.sleep(0.5)
            for t in load(sweep).get_trials(states=(TrialState.RUNNING,)):
                if (Path(t.user_attrs.get("run_dir", "/nonexistent")) / "checkpoints" / "last.ckpt").is_file():
                    victim = t
                    break
        job = victim.user_attrs["slurm_job_id"]
        subprocess.run(["scontrol", "requeue", job], check=True)
        follow = _cli("sesemi.status", [SWEEP_DIR, "--wait", "--interval", "2"], tmp_path)
        assert follow.returncode == 0, follow.stdout + follow.stderr
    finally:
        if ids:
            subprocess.run(["scancel", *ids], capture_output=True, check=False)
    print(follow.stdout)
    trials = load(sweep).get_trials()
    # The budget of 4, exactly: the requeued trial continued as itself, nothing was retried as a new trial.
    assert [t.number for t in trials] == [0, 1, 2, 3] and all(t.state == TrialState.COMPLETE for t in trials)
    continued = trials[victim.number]
    assert continued.params == victim.params and "retry_history" not in continued.user_attrs
    assert continued.user_attrs["sesemi:stopped"].startswith("SIGTERM at step"), continued.user_attrs
    run_dir = Path(continued.user_attrs["run_dir"])
    status = read_json(run_dir / "status.json")
    first, second = status["attempts"]  # the requeued job itself continued it, from its checkpoint
    assert status["state"] == "completed" and status["restarts"] == 1
    assert first["slurm_job_id"] == second["slurm_job_id"] == job and second["previous_state"] == "requeued"
    assert second["resumed_from"] == str(run_dir / "checkpoints" / "last.ckpt")
    assert len(continued.user_attrs["sesemi:attempts"]) == 2
    assert read_json(run_dir / "metrics.json")["global_step"] == 12
    assert sorted(continued.intermediate_values) == [3, 6, 9, 12]  # each validation once, across the attempts
    lines = follow.stdout.splitlines()
    row = next(line for line in reversed(lines) if line.startswith(f"trial_{victim.number:04d} "))  # the last table
    assert " completed " in row and row.split()[-1] == "1", follow.stdout  # restarts: 1
    assert lines[-1] == "6 jobs: 6 completed"
    worker = continued.user_attrs["worker"].split("@")[0]  # w<k>: the worker dir's name
    record = read_json(next(Path(j["run_dir"]) for j in jobs if Path(j["run_dir"]).name == worker) / "status.json")
    assert record["state"] == "completed" and record["restarts"] >= 1, record


DETACHED_SYNC = [*DETACHED_ASYNC[:2], "hydra/sweeper=optuna_sync", *DETACHED_ASYNC[5:]]
DETACHED_LOCAL = [*DETACHED_ASYNC[:5], "hydra/launcher=local", "hydra.launcher.wait=false"]
IN_MEMORY = [*DETACHED_ASYNC, "hydra.sweeper.storage=sqlite:///:memory:"]


@pytest.mark.slow  # a CLI start each (~8 s here); the checks themselves: test_an_in_memory_storage_is_refused
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            DETACHED_SYNC,
            "sesemi: error: hydra.launcher.wait: is false, but the synchronous sweeper samples each batch from the "
            "results of the last one",
        ),
        (
            DETACHED_LOCAL,
            "sesemi: error: hydra.launcher.wait: is false with a launcher whose jobs end with this process: a "
            "detached asynchronous sweep's workers are SLURM jobs that outlive it. Fix: use hydra/launcher=slurm",
        ),
        (
            IN_MEMORY,
            "sesemi: error: hydra.sweeper.storage: sqlite:///:memory: is an in-memory database",
        ),
    ],
    ids=["sync", "local", "in-memory"],
)
def test_a_detached_sweep_that_cannot_run_alone_is_refused_with_nothing_created(
    tmp_path: Path, args: list[str], message: str
):
    proc = run_cli(args, tmp_path, check=False)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert len([line for line in proc.stderr.splitlines() if line.startswith("sesemi: error:")]) == 1
    assert sorted(os.listdir(tmp_path)) == []  # no sweep dir, no study, no job


@pytest.mark.parametrize("spec", ["sqlite://", "sqlite:///:memory:", "sqlite+pysqlite:///:memory:"])
def test_an_in_memory_storage_is_refused(spec: str):
    with pytest.raises(ConfigError, match="in-memory database: every trial job and worker would open an empty one"):
        checked_spec(spec)
    assert checked_spec("sqlite:///studies/x.db") == "sqlite:///studies/x.db"  # a file is shared
