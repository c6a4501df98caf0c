"""Cluster P2: several sweep points per job (``hydra.launcher.points_per_job``), points per hour on one allocation.

A tiny model whose step does not fill its allocation (SmallCNN width 8, batches of 8 labeled + 16 unlabeled 8x8
digits, one loader in the training process, ``--steps`` steps): ``--points`` grid points (``run.seed=range(N)``) go
to the test SLURM cluster with ``hydra/launcher=slurm_cpu`` and ``hydra.launcher.array_parallelism=1``, so that
one allocation of ``cpus_per_task`` CPUs at a time serves the sweep, once with one point per job and once with K per
job (the same allocation shared by K processes, ``cpus_per_task // K`` torch threads each). Measured: seconds from
the command to its summary (the launcher waits for every job), points per hour, and the jobs SLURM ran (``jobs.json``;
every run dir must end completed). The settings alternate (1, K, 1, K...) so that both see the same load; each
figure is the median of ``--repeats``.

    python benchmarks/packing.py [--points 6] [--per-job 1 3] [--repeats 2] [--steps 40] [--cpus 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    DOC,
    RESULTS,
    command_line,
    load,
    machine,
    markdown_table,
    median,
    reproduce,
    write_json,
    write_section,
)

HEADING = "Cluster P2: several points per job"
SECTION = "packing"
ENV = {
    **os.environ,
    "PYTHONPATH": os.pathsep.join(
        filter(None, [str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH")])
    ),
    "HYDRA_FULL_ERROR": "0",
}
TINY = [
    "model.backbone.width=8",
    "data.labels_per_class=4",
    "data.labeled_batch_size=8",
    "data.unlabeled_batch_size=16",
    "data.num_workers=0",
    "callbacks.progress_bar=null",
    "callbacks.images=null",
]


def sweep(points: int, per_job: int, steps: int, cpus: int, workdir: Path) -> dict[str, Any]:
    """One sweep of ``points`` points, ``per_job`` to a job, on one allocation at a time; its wall time and jobs."""
    run_id = f"bench_pack_k{per_job}"
    args = [
        "-m",
        "hydra/launcher=slurm_cpu",
        "hydra.launcher.partition=debug",
        "hydra.launcher.array_parallelism=1",
        f"hydra.launcher.cpus_per_task={cpus}",
        f"hydra.launcher.points_per_job={per_job}",
        f"run.id={run_id}",
        f"run.seed=range(0,{points})",
        f"trainer.max_steps={steps}",
        f"trainer.val_check_interval={steps}",
        *TINY,
    ]
    before = load()
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "sesemi.train", *args], cwd=workdir, env=ENV, capture_output=True, text=True
    )
    wall = time.perf_counter() - started
    (jobs_file,) = workdir.glob(f"runs/{run_id}/*/jobs.json")
    jobs = json.loads(jobs_file.read_text())["jobs"]
    states = [(json.loads(Path(j["run_dir"], "status.json").read_text()) or {}).get("state") for j in jobs]
    return {
        "per_job": per_job,
        "points": points,
        "jobs": len({j["job_id"] for j in jobs}),
        "returncode": proc.returncode,
        "completed": sum(s == "completed" for s in states),
        "wall_s": round(wall, 1),
        "points_per_hour": round(points * 3600 / wall, 1),
        "load": [before, load()],
        "output_tail": (proc.stdout + proc.stderr)[-1500:],
    }


def render(results: list[dict[str, Any]], info: dict[str, Any], command: str, settings: dict[str, Any]) -> str:
    by_k: dict[int, list[dict[str, Any]]] = {}
    for r in results:
        by_k.setdefault(r["per_job"], []).append(r)
    base = median(r["wall_s"] for r in by_k.get(1, []))
    rows = []
    for k, runs in sorted(by_k.items()):
        wall = median(r["wall_s"] for r in runs)
        rows.append(
            [
                k,
                runs[0]["jobs"],
                runs[0]["points"],
                f"{wall:.0f}",
                f"{runs[0]['points'] * 3600 / wall:.0f}",
                f"{base / wall:.2f}x" if base == base else "-",
                " / ".join(f"{r['wall_s']:.0f}" for r in runs),
                ", ".join(f"{r['load'][0]:.1f}->{r['load'][1]:.1f}" for r in runs),
                "yes" if all(r["returncode"] == 0 and r["completed"] == r["points"] for r in runs) else "NO",
            ]
        )
    table = markdown_table(
        [
            "points per job",
            "jobs",
            "points",
            "wall s (median)",
            "points/hour",
            "vs 1 per job",
            "each run (s)",
            "load before->after",
            "all completed",
        ],
        rows,
    )
    intro = (
        f"{settings['points']} grid points of a tiny model (SmallCNN width 8, batches of 8 labeled + 16 unlabeled "
        f"digits, {settings['steps']} steps, no loader workers) on the test SLURM cluster, "
        f"`hydra/launcher=slurm_cpu`, one allocation of {settings['cpus']} CPUs at a time "
        "(`hydra.launcher.array_parallelism=1`): one point per job against K per job sharing the allocation "
        f"(torch threads: {settings['cpus']} // K, at least 1). Wall time from the command to its summary; the "
        f"settings alternate, median of {settings['repeats']}. Machine: {info['cpu_count']} CPUs shared with other "
        f"sessions' tests (load average in the table), torch {info['torch']}. No GPU was lent to this task: the same "
        "on a GPU (`point_gpus`) is not measured."
    )
    pairs = []
    for k in sorted(by_k):
        if k != 1 and len(by_k[k]) == len(by_k.get(1, [])):
            ratios = [one["wall_s"] / r["wall_s"] for one, r in zip(by_k[1], by_k[k])]
            pairs.append(f"{k} per job: " + ", ".join(f"{x:.2f}x" for x in ratios))
    notes = ("Each pair run back to back (1 per job, then K): " + "; ".join(pairs) + ". " if pairs else "") + (
        "Every job pays SLURM's scheduling and a Python start (torch, Lightning, Hydra) before its first step, and "
        "this model's step leaves the allocation mostly idle; K points per job pay that once per job and start their "
        "processes side by side. Here an allocation's CPUs are the same 2 cores every session's jobs run on (the "
        "test cluster's node declares 8), so the K processes also compete with each other and with other jobs."
    )
    return f"{intro}\n\n{table}\n\n{notes}\n\n{reproduce(command)}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--points", type=int, default=6)
    parser.add_argument("--per-job", type=int, nargs="+", default=[1, 3])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS / "packing.json")
    parser.add_argument("--doc", type=Path, default=DOC)
    parser.add_argument("--table-only", action="store_true", help="re-render the doc section from the results file")
    args = parser.parse_args(argv)
    settings = {"points": args.points, "steps": args.steps, "cpus": args.cpus, "repeats": args.repeats}
    if args.table_only:
        saved = json.loads(args.out.read_text())
        body = render(saved["results"], saved["machine"], saved["command"], saved["settings"])
        write_section(args.doc, SECTION, HEADING, body)
        return
    info = machine()
    results = []
    with tempfile.TemporaryDirectory(prefix="packing_") as tmp:
        for repeat in range(args.repeats):
            for k in args.per_job:
                workdir = Path(tmp) / f"k{k}_{repeat}"
                workdir.mkdir()
                result = sweep(args.points, k, args.steps, args.cpus, workdir)
                results.append(result)
                print(json.dumps({key: v for key, v in result.items() if key != "output_tail"}), flush=True)
    kept = [a for i, a in enumerate(sys.argv[1:] if argv is None else argv) if a not in ("--out", "--doc")]
    command = command_line("packing.py", [a for a in kept if not a.endswith((".json", ".md"))])
    write_json(args.out, {"machine": info, "command": command, "settings": settings, "results": results})
    write_section(args.doc, SECTION, HEADING, render(results, info, command, settings))


if __name__ == "__main__":
    main()
