"""The summary of a sweep: one row per job (job id, state, run dir, objective, log files), failed jobs included.

The launcher prints it when the sweep ends and writes ``summary.md`` and ``summary.csv`` into the sweep dir. It can
also be made again at any time, e.g. while jobs still run or after the launching shell went away::

    python -m sesemi.cluster.summary runs/lr_scan/20250101_120000

It reads ``jobs.json`` (written by the launcher at submission), each run dir's ``status.json``/``metrics.json``
and the SLURM state of each job from ``sacct``.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sesemi.cluster.grouping import format_groups, group_over, objective_name, run_dirs
from sesemi.cluster.slurm import sacct_states
from sesemi.errors import exit_with
from sesemi.rundir import RunState, objective_value, read_metrics, read_status
from sesemi.sweepdir import JOBS_FILE, SweepDir

COLUMNS = ("job", "job_id", "state", "slurm_state", "objective", "restarts", "run_dir", "stdout", "stderr", "error")


def job_row(job: Mapping[str, Any], slurm_state: str | None = None, error: str | None = None) -> dict[str, Any]:
    """One summary row from a ``jobs.json`` entry, the run dir's files, the scheduler state and the job's error."""
    run_dir = Path(job["run_dir"])
    status = read_status(run_dir) or {}
    objective = objective_value(read_metrics(run_dir) or {})
    state = status.get("state") or RunState.MISSING  # the job never started training (see its stderr)
    message = error or status.get("error") or ""
    return {
        "job": job["num"],
        "job_id": job.get("job_id") or "",
        "state": state,
        "slurm_state": slurm_state or "",
        "objective": "" if objective is None else f"{float(objective):.4f}",
        "restarts": status.get("restarts", ""),
        "run_dir": str(run_dir),
        "stdout": job.get("stdout") or "",
        "stderr": job.get("stderr") or "",
        "error": " ".join(str(message).split())[:300],
    }


def collect(sweep_dir: str | os.PathLike, *, use_sacct: bool = True) -> list[dict[str, Any]]:
    """Rows for every job listed in the sweep dir's ``jobs.json``."""
    jobs = SweepDir(sweep_dir).read_jobs()
    if jobs is None:
        raise FileNotFoundError(
            f"{Path(sweep_dir) / JOBS_FILE} not found: not a sweep dir of hydra/launcher=slurm|slurm_cpu|local"
        )
    entries = jobs["jobs"]
    states = sacct_states(j.get("job_id") for j in entries) if use_sacct and jobs.get("executor") == "slurm" else {}
    return [job_row(j, states.get(str(j.get("job_id"))) or j.get("job_state"), j.get("error")) for j in entries]


def _relative(path: str, base: Path) -> str:
    try:
        return os.path.relpath(path, base) if path else ""
    except ValueError:
        return path


def format_table(rows: list[dict[str, Any]], base: str | os.PathLike | None = None) -> str:
    """A Markdown table (paths relative to ``base``, the launch dir by default); failed jobs listed after it."""
    base = Path(base or os.getcwd())
    shown = ("job", "job_id", "state", "slurm_state", "objective", "restarts", "run_dir", "stdout", "stderr")
    lines = ["| " + " | ".join(shown) + " |", "|" + "|".join("---" for _ in shown) + "|"]
    for row in rows:
        cells = [_relative(str(row[c]), base) if c in ("run_dir", "stdout", "stderr") else str(row[c]) for c in shown]
        lines.append("| " + " | ".join(cells) + " |")
    bad = [r for r in rows if r["state"] != RunState.COMPLETED]
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["state"]] = counts.get(row["state"], 0) + 1
    lines.append("")
    lines.append(f"{len(rows)} jobs: " + ", ".join(f"{n} {state}" for state, n in sorted(counts.items())))
    for row in bad:
        lines.append(f"- job {row['job']} ({row['job_id']}) {row['state']}: {row['error'] or 'see its stderr'}")
        lines.append(f"  stderr: {_relative(row['stderr'], base)}")
    return "\n".join(lines) + "\n"


def write(sweep: SweepDir, rows: list[dict[str, Any]]) -> tuple[Path, Path]:
    """``summary.csv`` (every column, absolute paths) and ``summary.md`` (the table) in the sweep dir."""
    table = io.StringIO(newline="")
    writer = csv.DictWriter(table, fieldnames=COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    markdown = f"# Sweep {sweep.path}\n\n" + format_table(rows, base=sweep.path)
    return sweep.write_summary(markdown, table.getvalue())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sesemi.cluster.summary",
        description="Print (and rewrite) the summary of a sweep launched with hydra/launcher=slurm|slurm_cpu|local.",
    )
    parser.add_argument("sweep_dir", help="the sweep dir (holds jobs.json)")
    parser.add_argument("--no-write", action="store_true", help="only print, do not rewrite summary.csv/.md")
    parser.add_argument(
        "--over",
        metavar="KEY",
        help="group the points over KEY (e.g. run.seed): each group's mean ± std of the objective (any grid's dir)",
    )
    args = parser.parse_args(argv)
    if args.over:
        dirs = run_dirs(Path(args.sweep_dir))
        if not dirs:
            exit_with(f"{args.sweep_dir}: no run dir (status.json) below it")
        print(format_groups(group_over(dirs, args.over), args.over, objective_name(dirs)), end="")
        return 0
    try:
        rows = collect(args.sweep_dir)
    except FileNotFoundError as err:
        exit_with(err)
    print(format_table(rows), end="")
    if not args.no_write:
        csv_path, md_path = write(SweepDir(args.sweep_dir), rows)
        print(f"written: {md_path} {csv_path}")
    return 0 if all(r["state"] == RunState.COMPLETED for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
