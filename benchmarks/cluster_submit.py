"""Cluster P1: submitting 20, 200 and 2,000 points to SLURM, sesemi's ``slurm_cpu`` launcher next to Hydra's own
``submitit_slurm``; following them with ``python -m sesemi.status``.

For each size and launcher, one after the other: the real CLI (``python -m sesemi.train -m hydra/launcher=...
run.seed=range(0,N)``) submits to the local test cluster with ``additional_parameters={hold: true}``, so that no job
ever starts on the shared cluster; the jobs are cancelled as soon as they are all in the queue. Measured: seconds
from the command to all N jobs in SLURM's queue (``squeue -r``) and points per second, the peak RSS of the
submitting process (GNU time's max resident set size), that no two jobs share a run dir, the load average before
and after, and the seconds ``python -m sesemi.status`` takes over the N run dirs once each holds a finished run's
``status.json``/``metrics.json`` (including its one ``sacct`` call). sesemi's launcher is detached
(``hydra.launcher.wait=false``) and exits once all are submitted; Hydra's waits for results, so it is interrupted
once all its jobs are queued. A submission that fails (Hydra's launcher puts 2,000 points into one array, above
this cluster's MaxArraySize of 1001) is recorded with its error line and how long it took to fail.

    python benchmarks/cluster_submit.py [--sizes 20 200 2000] [--dry-run-sizes 2000]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    DOC,
    RESULTS,
    _children,
    command_line,
    load,
    machine,
    markdown_table,
    median,
    reproduce,
    write_json,
    write_section,
)

HEADING = "Cluster P1: submitting and following 20, 200 and 2,000 points"
ENV = {
    **os.environ,
    "PYTHONPATH": os.pathsep.join(
        filter(None, [str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH")])
    ),
}
HOLD = "hydra.launcher.additional_parameters={hold:true}"
COMMON = ["hydra.launcher.partition=debug", "hydra.launcher.cpus_per_task=1", "trainer.max_steps=6"]


def _queued(name: str) -> list[str]:
    """The queued jobs (array tasks one by one) of a submission: its arrays are named ``name``, or ``name.<a>-<b>``
    where sesemi split it at MaxArraySize."""
    out = subprocess.run(["squeue", "-h", "-r", "-o", "%i %j"], capture_output=True, text=True).stdout
    rows = (line.split(" ", 1) for line in out.splitlines() if " " in line)
    return [job for job, job_name in rows if job_name == name or job_name.startswith(f"{name}.")]


def _cancel(name: str) -> None:
    arrays = sorted({job.split("_")[0] for job in _queued(name)})
    if arrays:
        subprocess.run(["scancel", *arrays], capture_output=True)
    deadline = time.monotonic() + 60
    while _queued(name) and time.monotonic() < deadline:
        time.sleep(0.5)


def submit(launcher: str, n: int, workdir: Path, dry_run: bool = False) -> dict[str, Any]:
    name = f"bench_{launcher}_{n}_{os.getpid()}"
    args = ["-m", f"hydra/launcher={launcher}", f"run.id={name}", f"run.seed=range(0,{n})", *COMMON]
    # Hydra's schema refuses a new key in additional_parameters unless it is added with `+` (sesemi's takes both).
    hold = "+hydra.launcher.additional_parameters.hold=true" if launcher == "submitit_slurm" else HOLD
    args += ["hydra.launcher.dry_run=true"] if dry_run else [f"hydra.launcher.name={name}", hold]
    if launcher == "slurm_cpu" and not dry_run:
        args.append("hydra.launcher.wait=false")
    cmd = ["/usr/bin/time", "-f", "BENCH_MAXRSS_KB=%M", sys.executable, "-m", "sesemi.train", *args]
    started = time.perf_counter()
    log = workdir / f"{name}.log"  # a file, not a pipe: Hydra's launcher writes more than a pipe holds at 2,000
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, cwd=workdir, env=ENV, stdout=out, stderr=subprocess.STDOUT)
    all_queued = None
    while proc.poll() is None and not dry_run:
        if len(_queued(name)) >= n:
            all_queued = time.perf_counter() - started
            if launcher == "submitit_slurm":
                for child in _children(proc.pid):  # GNU time ignores SIGINT: interrupt the command itself
                    os.kill(child, signal.SIGINT)  # it would wait for the (held) jobs forever
            break
        time.sleep(0.2)
    proc.wait(timeout=1800)
    output = log.read_text()
    if all_queued is None and not dry_run and len(_queued(name)) >= n:
        all_queued = time.perf_counter() - started  # exited before the last look: it submitted everything
    wall = time.perf_counter() - started
    queued = 0 if dry_run else len(_queued(name))
    if not dry_run:
        _cancel(name)
    rss = re.search(r"BENCH_MAXRSS_KB=(\d+)", output)
    errors = [line.strip() for line in output.splitlines() if re.search(r"\berror\b", line, re.IGNORECASE)]
    return {
        "launcher": launcher,
        "n": n,
        "dry_run": dry_run,
        "name": name,
        "returncode": proc.returncode,
        "all_queued_s": None if all_queued is None else round(all_queued, 2),
        "wall_s": round(wall, 2),
        "queued": queued,
        "peak_rss_mib": round(int(rss.group(1)) / 1024, 1) if rss else None,
        "error": None if all_queued is not None or dry_run else (errors[-1][:300] if errors else output[-300:]),
        "output_tail": output[-1500:],
    }


def distinct_run_dirs(workdir: Path, name: str) -> tuple[int, int] | None:
    """(jobs, distinct run dirs) from sesemi's jobs.json (Hydra's launcher writes no such record)."""
    files = list(workdir.glob(f"runs/{name}/*/jobs.json"))
    if not files:
        return None
    jobs = json.loads(files[0].read_text())["jobs"]
    return len(jobs), len({j["run_dir"] for j in jobs})


def time_status(workdir: Path, name: str, template: Path, repeats: int = 3) -> dict[str, Any]:
    """``python -m sesemi.status`` over the sweep, once every run dir holds a finished run's files."""
    (sweep,) = [p.parent for p in workdir.glob(f"runs/{name}/*/jobs.json")]
    record = json.loads((template / "status.json").read_text())
    for attempt in record["attempts"]:  # started after its job's submission, as a real run of it would have
        attempt["started"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    for job in json.loads((sweep / "jobs.json").read_text())["jobs"]:
        run_dir = Path(job["run_dir"])
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "status.json").write_text(json.dumps(record))
        shutil.copy(template / "metrics.json", run_dir / "metrics.json")
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "sesemi.status", str(sweep)], cwd=workdir, env=ENV, capture_output=True, text=True
        )
        times.append(time.perf_counter() - started)
    return {
        "median_s": round(median(times), 2),
        "times_s": [round(t, 2) for t in times],
        "last_line": proc.stdout.splitlines()[-1] if proc.stdout else proc.stderr[-300:],
    }


def template_run(workdir: Path) -> Path:
    """One finished tiny run (its status.json and metrics.json are what every run dir gets)."""
    workdir.mkdir(parents=True)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "sesemi.train",
            "trainer.max_steps=2",
            "trainer.val_check_interval=2",
            "data.num_workers=0",
            "callbacks.progress_bar=null",
        ],
        cwd=workdir,
        env=ENV,
        capture_output=True,
        check=True,
    )
    (status,) = workdir.glob("runs/default/*/status.json")
    return status.parent


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[20, 200, 2000])
    parser.add_argument("--dry-run-sizes", type=int, nargs="*", default=[])
    parser.add_argument("--out", type=Path, default=RESULTS / "cluster_submit.json")
    parser.add_argument("--doc", type=Path, default=DOC)
    parser.add_argument("--table-only", action="store_true", help="re-render the doc section from the results file")
    args = parser.parse_args(argv)
    if args.table_only:
        saved = json.loads(args.out.read_text())
        body = render(saved["results"], saved["machine"], saved["command"])
        write_section(args.doc, "cluster_submit", HEADING, body)
        return
    info = machine()
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="cluster_submit_") as tmp:
        root = Path(tmp)
        template = template_run(root / "template")
        for n in args.sizes:
            for launcher in ("slurm_cpu", "submitit_slurm"):
                workdir = root / f"{launcher}_{n}"
                workdir.mkdir()
                before = load()
                result = submit(launcher, n, workdir)
                result["load"] = [before, load()]
                if launcher == "slurm_cpu":
                    result["run_dirs"] = distinct_run_dirs(workdir, result["name"])
                    result["status"] = time_status(workdir, result["name"], template)
                results.append(result)
                print(json.dumps({k: v for k, v in result.items() if k != "output_tail"}), flush=True)
        for n in args.dry_run_sizes:
            workdir = root / f"dry_{n}"
            workdir.mkdir()
            result = submit("slurm_cpu", n, workdir, dry_run=True)
            result["load"] = [load(), load()]
            results.append(result)
            print(json.dumps({k: v for k, v in result.items() if k != "output_tail"}), flush=True)
    command = command_line("cluster_submit.py", _without_paths(sys.argv[1:] if argv is None else argv))
    write_json(args.out, {"machine": info, "command": command, "results": results})
    write_section(args.doc, "cluster_submit", HEADING, render(results, info, command))


def _without_paths(argv: list[str]) -> list[str]:
    """The arguments that reproduce the figures: without ``--out``/``--doc`` and their values."""
    kept, skip = [], False
    for arg in argv:
        if not skip and arg not in ("--out", "--doc"):
            kept.append(arg)
        skip = arg in ("--out", "--doc")
    return kept


def _rate(r: dict[str, Any]) -> float | None:
    """Points per second from the command to all queued (None: not all were queued)."""
    return r["n"] / r["all_queued_s"] if r.get("all_queued_s") else None


def _findings(results: list[dict[str, Any]]) -> str:
    """What the figures say about the goals (>= 5x submitit_slurm's points per second at 200 and 2,000; 2,000
    points in <= 60 s), from the rows of this run."""
    real = [r for r in results if not r["dry_run"]]
    by = {(r["launcher"], r["n"]): r for r in real}
    lines = []
    for n in sorted({r["n"] for r in real}):
        ours, theirs = by.get(("slurm_cpu", n)), by.get(("submitit_slurm", n))
        if ours is None or theirs is None:
            continue
        mine, hydra = _rate(ours), _rate(theirs)
        if mine and hydra:
            lines.append(
                f"- {n} points: `slurm_cpu` {mine:.1f} points/s, `submitit_slurm` {hydra:.2f} points/s: "
                f"{mine / hydra:.1f}x."
            )
        elif mine:
            lines.append(
                f"- {n} points: `slurm_cpu` {mine:.1f} points/s ({ours['all_queued_s']} s for all {n}); "
                f"`submitit_slurm` did not submit them: {theirs.get('error') or 'not all queued'} "
                f"(after {theirs['wall_s']} s; against that time, {mine * theirs['wall_s'] / n:.0f}x)."
            )
    status = [r for r in real if r.get("status")]
    if status:
        slowest = max(status, key=lambda r: r["status"]["median_s"])
        lines.append(
            f"- `python -m sesemi.status` over the sweep dir (one `status.json` and `metrics.json` per job, one "
            f"`sacct` call): at most {slowest['status']['median_s']} s (median of 3, {slowest['n']} jobs)."
        )
    return "\n".join(lines)


def render(results: list[dict[str, Any]], info: dict[str, Any], command: str) -> str:
    rows = []
    for r in results:
        if r["dry_run"]:
            what = f"{r['wall_s']} s (dry run: plan only)"
        elif r["all_queued_s"] is not None:
            what = f"{r['all_queued_s']} s"
        else:
            what = f"failed after {r['wall_s']} s ({r['queued']}/{r['n']} queued)"
        rate = _rate(r)
        dirs = r.get("run_dirs")
        status = r.get("status")
        rows.append(
            [
                r["launcher"] + (" (dry run)" if r["dry_run"] else ""),
                r["n"],
                what,
                f"{rate:.1f}" if rate else "-",
                f"{r['peak_rss_mib']} MiB",
                f"{dirs[1]} for {dirs[0]} jobs" if dirs else "no record (hydra.sweep.subdir = job num)",
                f"{status['median_s']} s" if status else "-",
                f"{r['load'][0]} -> {r['load'][1]}",
            ]
        )
    table = markdown_table(
        [
            "launcher",
            "points",
            "command to all queued",
            "points/s",
            "peak RSS (submitting process)",
            "distinct run dirs",
            "sesemi.status",
            "load (1 min)",
        ],
        rows,
    )
    failures = [f"- `{r['launcher']}`, {r['n']} points: `{r['error']}`" for r in results if r.get("error")]
    loads = [x for r in results for x in r["load"]]
    machine_line = (
        f"Machine: {info['cpu_count']} CPUs shared with other engineers' tests and jobs (load average "
        f"{min(loads):.1f}-{max(loads):.1f} over the run, {info['load_at_start'][0]} at its start; per row in the "
        "last column), single-node SLURM 22.05 test cluster (MaxArraySize 1001, MaxJobCount 10000), Python "
        f"{info['python']}, torch {info['torch']}. Each size ran both launchers one after the other, the same "
        "points; the jobs are submitted held (`--hold`) and cancelled once queued, so none ran."
    )
    parts = [_findings(results), machine_line, table]
    if failures:
        parts.append("Errors:\n\n" + "\n".join(failures))
    parts.append(reproduce(command))
    return "\n\n".join(parts)


if __name__ == "__main__":
    main()
