"""``python -m sesemi.status <sweep dir | run dir | runs dir> [--wait] [--all] [--resubmit [key=value ...]]``

One table, one row per job: the sweep point (its overrides: what differs between the jobs of a sweep, an Optuna
trial's parameters, or what a run's command line set; cut after a whole override), SLURM's job id and state, the
run's state, step / max_steps, the latest objective value, elapsed time and ETA, restarts. Below a folder that is no
sweep of jobs (``runs/``, a local grid), each run is named by its dir below it (``default/20260101_120000``) and the
rows are sorted by name. With many jobs the counts per state come first, then only the rows that need attention
(failed, cancelled, lost, missing); ``--all`` shows every row.

States: ``pending`` (not started training), ``running``, ``requeued`` (waiting to resume), ``completed``,
``failed``, ``cancelled``, ``lost`` (the run says running but SLURM no longer runs it, or, without SLURM, its
heartbeat stopped) and ``missing`` (SLURM ended the job before it started training: see its stderr); an Optuna
trial can also be ``pruned``, or ``retried`` (lost, and a retry with its parameters stands in for it). The trials of
an asynchronous sweep's workers get a row each (``trial_NNNN``, the worker's job id), next to the workers' rows.

``--wait`` follows the jobs until every one has ended (redrawing the table on a terminal, a line per change
otherwise) and exits 0 only when all completed (or were pruned or retried). ``--resubmit`` submits the failed,
cancelled, lost and missing points of a sweep again, each in its own run dir from its ``checkpoints/last.ckpt``,
with its original overrides; ``hydra.launcher.<key>=<value>`` arguments change their resources (e.g.
``hydra.launcher.timeout_min=120``). Completed points are never resubmitted.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter
from pathlib import Path

from sesemi.cluster.tracking import STALE_S, JobRow, collect, ended, shorten
from sesemi.errors import exit_with
from sesemi.rundir import ATTENTION, DONE, RunState

COLUMNS = ("job", "point", "job id", "slurm", "state", "step", "objective", "elapsed", "eta", "restarts")
ALL_ROWS_UP_TO = 25
POINT_CHARS = 48


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


def _cells(row: JobRow) -> list[str]:
    step = "-" if row.step is None else f"{row.step}/{row.max_steps}" if row.max_steps else str(row.step)
    point = shorten(row.point, POINT_CHARS)  # whole overrides, then "..."
    return [
        row.name,
        point or "-",
        row.job_id or "-",
        row.slurm or "-",
        row.state,
        step,
        "-" if row.objective is None else f"{float(row.objective):.4f}",
        _duration(row.elapsed_s),
        _duration(row.eta_s),
        str(row.restarts),
    ]


def counts(rows: list[JobRow]) -> str:
    by_state = Counter(r.state for r in rows)
    order = (
        RunState.COMPLETED,
        RunState.PRUNED,
        RunState.RETRIED,
        RunState.RUNNING,
        RunState.REQUEUED,
        RunState.PENDING,
        RunState.FAILED,
        RunState.CANCELLED,
        RunState.LOST,
        RunState.MISSING,
    )
    parts = [f"{by_state[s]} {s}" for s in order if by_state[s]]
    parts += [f"{n} {s}" for s, n in sorted(by_state.items()) if s not in order]
    return f"{len(rows)} jobs: " + ", ".join(parts)


def render(rows: list[JobRow], show_all: bool = False) -> str:
    """The table (every row, or the counts first and the rows that need attention), and the counts per state."""
    shown = rows if show_all or len(rows) <= ALL_ROWS_UP_TO else [r for r in rows if r.state in ATTENTION]
    if not shown:  # no jobs, or many and none needs attention: the counts say it all
        return counts(rows) + "\n"
    lines = [] if shown is rows else [counts(rows), f"rows that need attention ({len(shown)}; --all shows all):"]
    table = [list(COLUMNS), *(_cells(r) for r in shown)]
    widths = [max(len(line[i]) for line in table) for i in range(len(COLUMNS))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in table]
    for row in shown:
        if row.state in ATTENTION:
            why = row.error or ("SLURM state " + row.slurm if row.slurm else "no heartbeat")
            job = f"{row.name} ({row.job_id})" if row.job_id else row.name  # no job id: the run dir follows
            lines.append(f"- job {job} {row.state}: {why}")
            stderr = f"  stderr: {_relative(row.stderr)}" if row.stderr else ""
            lines.append(f"  run dir: {_relative(row.run_dir)}{stderr}")
    lines.append(counts(rows))
    return "\n".join(lines) + "\n"


def _relative(path: str | os.PathLike) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:
        return str(path)


def _ended(rows: list[JobRow]) -> bool:
    return all(ended(r) for r in rows)


def follow(path: str, interval: float, show_all: bool, stale_s: float) -> list[JobRow]:
    """Until every job has ended: redraw in place on a terminal, else one line per change of a job's state."""
    tty = sys.stdout.isatty()
    rows = collect(path, stale_s=stale_s)
    if not tty:
        print(render(rows, show_all), end="", flush=True)
    seen = {r.run_dir: (r.state, r.slurm) for r in rows}
    while True:
        if tty:
            header = f"{time.strftime('%H:%M:%S')} {path} (every {interval:g} s; Ctrl-C stops following)\n"
            print("\x1b[H\x1b[2J" + header + render(rows, show_all), end="", flush=True)
        else:
            for row in rows:
                now = (row.state, row.slurm)
                if seen.get(row.run_dir) != now:
                    step = f", step {row.step}/{row.max_steps}" if row.step is not None else ""
                    print(
                        f"{time.strftime('%H:%M:%S')} job {row.name} ({row.job_id or '-'}): {row.state} "
                        f"(SLURM {row.slurm or '-'}){step}",
                        flush=True,
                    )
                    seen[row.run_dir] = now
        if _ended(rows):
            return rows
        time.sleep(interval)
        rows = collect(path, stale_s=stale_s)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sesemi.status", description=__doc__.split("\n\n")[1])
    parser.add_argument("path", help="a sweep dir (jobs.json), a run dir (status.json) or a dir of runs (runs/)")
    parser.add_argument("--wait", action="store_true", help="follow until every job ended; exit 0 if all completed")
    parser.add_argument("--all", action="store_true", help="show every row, not only those that need attention")
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between looks with --wait (10)")
    parser.add_argument("--stale-s", type=float, default=STALE_S, help="heartbeat age that means lost (180)")
    parser.add_argument(
        "--resubmit",
        nargs="*",
        metavar="hydra.launcher.KEY=VALUE",
        help="resubmit the failed, cancelled, lost and missing points of a sweep (resources overridable)",
    )
    args = parser.parse_args(argv)
    try:
        rows = collect(args.path, stale_s=args.stale_s)
        if args.resubmit is not None:
            from sesemi.cluster.resubmit import resubmit

            resubmit(Path(args.path), rows, args.resubmit)
            rows = collect(args.path, stale_s=args.stale_s)
    except (FileNotFoundError, ValueError) as err:
        exit_with(err)
    if args.wait:
        try:
            rows = follow(args.path, args.interval, args.all, args.stale_s)
        except KeyboardInterrupt:
            print("\nsesemi: stopped following; the jobs are not affected.", file=sys.stderr)
            return 130
    if not (args.wait and sys.stdout.isatty()):  # on a terminal the last redraw already shows the table
        print(render(rows, args.all), end="")
    return 0 if all(r.state in DONE for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
