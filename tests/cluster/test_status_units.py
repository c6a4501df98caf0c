"""``sesemi.status`` on run dirs written here: states, the table for many jobs, sweep points, the CLI's exit code."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from conftest import run_cli

from sesemi import status
from sesemi.cluster.resubmit import parse_changes
from sesemi.cluster.tracking import collect, derive_state

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)


def _fresh() -> str:  # a record's time stamp, written just now
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _beat(seconds_ago: float) -> dict:
    return {"progress": {"heartbeat": (NOW - timedelta(seconds=seconds_ago)).isoformat()}}


@pytest.mark.parametrize(
    ("record", "slurm", "expected"),
    [
        (None, "PENDING", "pending"),
        (None, "", "pending"),
        (None, "FAILED", "missing"),  # SLURM ended the job before it started training
        (None, "CANCELLED", "cancelled"),
        ({"state": "running", **_beat(5)}, "RUNNING", "running"),
        ({"state": "running", **_beat(5)}, "CANCELLED", "cancelled"),
        ({"state": "running", **_beat(5)}, "TIMEOUT", "lost"),  # the run never said it ended: lost
        ({"state": "running", **_beat(5)}, "NODE_FAIL", "lost"),
        ({"state": "running", **_beat(600)}, "", "lost"),  # no scheduler (local) and no heartbeat for 10 min
        ({"state": "running", **_beat(600)}, "RUNNING", "running"),  # SLURM runs it: slow, not lost
        ({"state": "requeued"}, "PENDING", "requeued"),
        ({"state": "completed"}, "COMPLETED", "completed"),
        ({"state": "failed"}, "COMPLETED", "failed"),  # the training raised; the batch script ended normally
        ({"state": "pruned"}, "RUNNING", "pruned"),  # an Optuna trial the pruner stopped (its worker runs on)
        ({"state": "failed", "retried_as": 7}, "RUNNING", "retried"),  # lost; trial 7 stands in for it
        ({"state": "requeued", "retried_as": 7}, "PENDING", "retried"),
    ],
)
def test_the_state_a_user_sees(record, slurm, expected):
    assert derive_state(record, slurm, NOW) == expected


def _sweep(root: Path, states: list[str], executor: str = "local") -> Path:
    sweep = root / "runs" / "scan" / "20260101_120000"
    jobs = []
    for num, state in enumerate(states):
        run_dir = sweep / str(num)
        run_dir.mkdir(parents=True)
        record = {"state": state, "restarts": 0, "attempts": [{"started": "2026-01-01T11:00:00+00:00"}]}
        record["progress"] = {"step": 5, "max_steps": 10, "heartbeat": datetime.now(timezone.utc).isoformat()}
        if state == "failed":
            record["error"] = "ValueError: boom"
        (run_dir / "status.json").write_text(json.dumps(record))
        if state == "completed":
            (run_dir / "metrics.json").write_text(json.dumps({"objective": {"value": 0.5}, "global_step": 10}))
        overrides = ["trainer.max_steps=10", f"optimizer.lr=0.{num}", "hydra.launcher.partition=debug"]
        jobs.append({"num": num, "job_id": f"9_{num}", "run_dir": str(run_dir), "overrides": overrides})
    (sweep / "jobs.json").write_text(json.dumps({"executor": executor, "jobs": jobs}))
    return sweep


def test_a_sweep_point_is_what_differs_between_its_jobs(tmp_path: Path):
    rows = collect(_sweep(tmp_path, ["completed", "running"]))
    assert [r.point for r in rows] == ["optimizer.lr=0.0", "optimizer.lr=0.1"]
    assert [(r.state, r.step, r.max_steps, r.objective) for r in rows] == [
        ("completed", 10, 10, 0.5),
        ("running", 5, 10, None),
    ]


def test_an_async_sweep_shows_its_workers_and_each_trial_with_the_job_that_ran_it(tmp_path: Path):
    sweep = tmp_path / "sweeps" / "study"
    jobs = []
    for k, (state, slurm_id) in enumerate([("running", "41"), ("completed", "42")]):
        worker = sweep / "workers" / "20260101_120000-1" / f"w{k}"
        worker.mkdir(parents=True)
        record = {"state": state, "attempts": [{"slurm_job_id": slurm_id}], "updated": _fresh()}
        (worker / "status.json").write_text(json.dumps(record))
        overrides = ["optimizer.momentum=0.9", f"hydra.sweep.subdir=workers/x/w{k}"]
        jobs.append({"num": k, "job_id": f"40_{k}", "run_dir": str(worker), "overrides": overrides})
    (sweep / "jobs.json").write_text(json.dumps({"executor": "local", "jobs": jobs}))
    trials = [("completed", "41", {}), ("pruned", "42", {}), ("failed", "41", {"retried_as": 3}), ("running", "41", {})]
    for number, (state, slurm_id, extra) in enumerate(trials):
        run_dir = sweep / f"trial_{number:04d}"
        (run_dir / ".hydra").mkdir(parents=True)
        attempts = [{"slurm_job_id": slurm_id}]
        (run_dir / "status.json").write_text(
            json.dumps({"state": state, "attempts": attempts, "updated": _fresh(), **extra})
        )
        overrides = f"- optimizer.lr=0.{number}\n- optimizer.momentum=0.9\n- hydra.sweep.subdir=trial_{number:04d}\n"
        (run_dir / ".hydra" / "overrides.yaml").write_text(overrides)
    rows = collect(sweep, use_sacct=False)
    table = [(r.name, r.point, r.job_id, r.state) for r in rows]
    assert table == [
        ("0", "", "40_0", "running"),
        ("1", "", "40_1", "completed"),
        ("trial_0000", "optimizer.lr=0.0", "40_0", "completed"),
        ("trial_0001", "optimizer.lr=0.1", "40_1", "pruned"),
        ("trial_0002", "optimizer.lr=0.2", "40_0", "retried"),
        ("trial_0003", "optimizer.lr=0.3", "40_0", "running"),
    ]
    assert all(not r.entry.get("job_id") for r in rows[2:])  # --resubmit leaves trials to the workers
    above = collect(tmp_path, use_sacct=False)  # from a dir above: the same rows, none twice, named by their dirs
    assert [r.name for r in above] == sorted(r.run_dir.relative_to(tmp_path).as_posix() for r in rows)
    assert {r.run_dir: replace(r, label="") for r in above} == {r.run_dir: r for r in rows}
    assert status.counts(rows) == "6 jobs: 2 completed, 1 pruned, 1 retried, 2 running"


def test_two_hundred_jobs_show_the_counts_first_then_the_rows_that_need_attention(tmp_path: Path):
    states = ["completed"] * 190 + ["running"] * 7 + ["failed"] * 3
    text = status.render(collect(_sweep(tmp_path, states)))
    lines = text.splitlines()
    assert lines[0] == "200 jobs: 190 completed, 7 running, 3 failed"
    assert lines[1] == "rows that need attention (3; --all shows all):"
    assert sum(" failed " in line for line in lines) == 3 and " running " not in text
    assert "- job 197 (9_197) failed: ValueError: boom" in text
    assert lines[-1] == lines[0]  # and again as the footer
    assert len(status.render(collect(tmp_path / "runs"), show_all=True).splitlines()) > 200


def test_the_cli_on_a_sweep_dir_a_run_dir_and_a_runs_dir(workdir: Path):
    sweep = _sweep(workdir, ["completed", "completed"])
    for path in (sweep, sweep / "1", "runs"):
        proc = run_cli([str(path)], workdir, fast=False, module="sesemi.status")
        assert proc.stdout.splitlines()[-1].endswith("completed"), proc.stdout
    (sweep / "1" / "status.json").write_text(json.dumps({"state": "failed", "error": "ValueError: boom"}))
    proc = run_cli([str(sweep)], workdir, fast=False, module="sesemi.status", check=False)
    assert proc.returncode == 1 and "- job 1 (9_1) failed: ValueError: boom" in proc.stdout
    proc = run_cli([str(workdir / "nowhere")], workdir, fast=False, module="sesemi.status", check=False)
    assert proc.returncode == 2 and proc.stderr.startswith("sesemi: error: ") and "Traceback" not in proc.stderr


def test_resubmit_only_changes_resources():
    assert parse_changes(["hydra.launcher.timeout_min=120", "hydra.launcher.partition=long"]) == {
        "timeout_min": 120,
        "partition": "long",
    }
    with pytest.raises(ValueError, match="only resources can change"):
        parse_changes(["optimizer.lr=0.1"])


@pytest.mark.slow
def test_a_run_keeps_its_progress_in_status_json(workdir: Path):
    run_cli([], workdir)  # the tiny default run (FAST: 6 steps)
    (record,) = [json.loads(p.read_text()) for p in workdir.glob("runs/default/*/status.json")]
    progress = record["progress"]
    assert (progress["step"], progress["max_steps"]) == (6, 6)
    assert 0 <= progress["objective"] <= 1 and progress["steps_per_s"] > 0
    assert datetime.fromisoformat(progress["heartbeat"]) <= datetime.now(timezone.utc)


def test_wait_redraws_the_table_in_place_on_a_terminal(workdir: Path):
    """``--wait`` on a terminal: the table redrawn (cursor home, clear), not a line per change; exit 0 when done."""
    import shlex
    import shutil
    import subprocess
    import sys

    if shutil.which("script") is None:
        pytest.skip("util-linux `script` (a pseudo-terminal) is not installed")
    sweep = _sweep(workdir, ["completed", "completed"])
    command = shlex.join([sys.executable, "-m", "sesemi.status", str(sweep), "--wait"])
    proc = subprocess.run(["script", "-qec", command, "/dev/null"], cwd=workdir, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "\x1b[H\x1b[2J" in proc.stdout and "(every 10 s; Ctrl-C stops following)" in proc.stdout
    assert proc.stdout.rstrip().endswith("2 jobs: 2 completed")
