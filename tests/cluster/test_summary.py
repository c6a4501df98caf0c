"""sesemi.cluster.summary: a sweep's table of jobs from its jobs.json and run dirs."""

from __future__ import annotations

import json
from pathlib import Path

from sesemi.cluster import summary
from sesemi.sweepdir import SweepDir


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
