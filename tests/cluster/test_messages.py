"""sesemi.cluster.messages: what a launch prints (the dry run's plan, the submitted jobs' run dirs)."""

from __future__ import annotations

from pathlib import Path

from sesemi.cluster.messages import run_dirs_text
from sesemi.cluster.plan import JobPlan


def test_the_launcher_names_the_run_dirs_the_jobs_really_use(tmp_path: Path):
    grid = [JobPlan(n, [], {}, tmp_path / str(n)) for n in range(3)]
    assert run_dirs_text(grid) == f"{tmp_path}/<job num>"
    workers = [JobPlan(n, [], {}, tmp_path / "workers" / "s1" / f"w{n}") for n in range(6)]
    text = run_dirs_text(workers)
    assert text.endswith("workers/s1/w3 and 2 more") and "workers/s1/w0, " in text
