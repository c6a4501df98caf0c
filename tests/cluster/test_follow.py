"""sesemi.cluster.follow: after submission, each job's result collected on its own and the sweep's summary written,
batch after batch, from launches at the same time too."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from sesemi.cluster import summary
from sesemi.cluster.follow import summarize
from sesemi.cluster.plan import JobPlan
from sesemi.cluster.submission import ledger_entry
from sesemi.sweepdir import SweepDir


def _ended_job(sweep_dir: Path, num: int, state: str) -> Any:
    """A launcher's plan of job ``num`` whose run dir says ``state`` (the job itself has ended)."""
    run_dir = sweep_dir / str(num)
    run_dir.mkdir()
    (run_dir / "status.json").write_text(json.dumps({"state": state, "restarts": 0}))
    paths = SimpleNamespace(stdout=sweep_dir / f"{num}.out", stderr=sweep_dir / f"{num}.err")
    handle = SimpleNamespace(job_id=str(100 + num), paths=paths, state="FINISHED")
    return JobPlan(num, [f"optimizer.lr=0.{num + 1}"], {}, run_dir, handle=handle)


def test_jobs_file_and_summary_accumulate_over_launcher_batches(tmp_path: Path, capsys: pytest.CaptureFixture):
    """Sweepers such as Optuna call the launcher once per batch, into the same sweep dir."""
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
