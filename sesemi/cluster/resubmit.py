"""``python -m sesemi.status <sweep dir> --resubmit [hydra.launcher.KEY=VALUE ...]``: submit failed points again.

Only the points that failed, were cancelled, were lost or never started (``missing``) are submitted again; a
completed, running, pending or requeued point never is. Each is the very job the sweep submitted (submitit keeps
it in ``<job id>_submitted.pkl``: the launcher with the sweep's config and the point's overrides), so it comes back
to its own run dir with its original overrides, plus ``run.resume=<run dir>`` when the run has a
``checkpoints/last.ckpt`` to continue from. Its resources are the ones recorded in ``jobs.json`` at submission,
changed by the ``hydra.launcher.KEY=VALUE`` arguments and checked against the run's config as at submission. The
points go out as one job array per set of resources, and ``jobs.json`` then lists the new job ids (the old ones
in ``previous_job_ids``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from sesemi.cluster import snapshot
from sesemi.cluster.tracking import JobRow
from sesemi.cluster.validate import check_job
from sesemi.rundir import ATTENTION, HYDRA_DIR, last_checkpoint
from sesemi.sweepdir import JOBS_FILE, SweepDir, now

RESUBMIT = ATTENTION  # failed, cancelled, lost, missing


def parse_changes(args: Sequence[str]) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    for arg in args:
        key, sep, value = arg.partition("=")
        if not sep or not key.startswith("hydra.launcher."):
            raise ValueError(
                f"--resubmit {arg}: only resources can change: hydra.launcher.KEY=VALUE, "
                "e.g. hydra.launcher.timeout_min=120"
            )
        changes[key.removeprefix("hydra.launcher.")] = yaml.safe_load(value)
    return changes


def _run_config(run_dir: Path) -> dict[str, Any]:
    config = yaml.safe_load((run_dir / HYDRA_DIR / "config.yaml").read_text()) if run_dir.is_dir() else None
    return (config or {}).get("run") or {}


def resubmit(sweep_dir: Path, rows: list[JobRow], args: Sequence[str]) -> list[JobRow]:
    """Resubmit the rows that need it (see the module doc); returns them."""
    import submitit

    from sesemi.cluster.submission import make_executor, unpacked
    from sesemi.compat.submitit import job_paths

    sweep = SweepDir(sweep_dir)
    data = sweep.read_jobs()
    if data is None:
        raise ValueError(f"--resubmit needs a sweep dir with {JOBS_FILE} (hydra/launcher=slurm|slurm_cpu|local)")
    changes = parse_changes(args)
    todo = [r for r in rows if r.state in RESUBMIT and r.entry.get("job_id")]
    if not todo:
        print("sesemi: nothing to resubmit (no failed, cancelled, lost or missing point).")
        return []
    kind, profile = data["executor"], data.get("profile", "gpu")
    problems = []
    groups: dict[str, list[tuple[JobRow, dict[str, Any], Any]]] = {}
    for row in todo:
        params = {**row.entry["params"], **changes}
        run = _run_config(row.run_dir)
        if changes and run:  # the point passed these checks at submission; only changed resources need them again
            problems += [f"job {row.name}: {p}" for p in check_job(params, run, profile=profile, executor=kind)]
        folder = Path(str(params["submitit_folder"]))
        job_class = submitit.SlurmJob if kind == "slurm" else submitit.LocalJob
        submitted = job_class(folder=sweep_dir / folder, job_id=row.job_id).submission()
        # A point of a packed job (hydra.launcher.points_per_job) goes back as a job of its own.
        job = unpacked(submitted.function, submitted.args, row.num)
        key = json.dumps([params, row.entry.get("snapshot")], sort_keys=True, default=str)
        groups.setdefault(key, []).append((row, params, job))
    if problems:
        raise ValueError("the resources do not fit; nothing was resubmitted:\n  " + "\n  ".join(problems))

    os.chdir(data.get("launch_dir") or os.getcwd())  # the jobs resolve the sweep's relative paths from there
    by_num = {j["num"]: j for j in data["jobs"]}
    lines = []
    for group in groups.values():
        launcher = group[0][2][0]
        calls = []
        for row, _, (_, job_args) in group:
            overrides = [o for o in job_args[0] if not o.startswith("run.resume=")]
            if last_checkpoint(row.run_dir).is_file():
                overrides.append(f"run.resume={row.run_dir}")
            calls.append((overrides, *job_args[1:]))
        code_path = group[0][0].entry.get("snapshot")
        code = snapshot.load(Path(code_path)) if code_path else None  # the code the point was submitted with
        executor = make_executor(kind, group[0][1], sweep_dir, code)
        handles = executor.map_array(launcher, *zip(*calls))
        for (row, params, _), (overrides, *_), handle in zip(group, calls, handles):
            entry = by_num[row.num]
            paths = job_paths(handle)
            entry["previous_job_ids"] = [*entry.get("previous_job_ids", []), row.job_id]
            entry.update(job_id=str(handle.job_id), stdout=str(paths.stdout), stderr=str(paths.stderr), params=params)
            entry["submitted"] = now()
            entry.pop("error", None)
            entry.pop("points_per_job", None)  # a job of its own now
            entry.pop("job_state", None)
            how = "resumes from its last.ckpt" if overrides[-1].startswith("run.resume=") else "starts over"
            on = f", code snapshot {code.path}" if code else ", the code as it is now (no snapshot)"
            lines.append(f"  job {row.name}: {row.job_id} ({row.state}) -> {handle.job_id}, {how}{on}")
    sweep.write_jobs(executor=kind, profile=profile, jobs=data["jobs"], launch_dir=data.get("launch_dir", ""))
    print(f"sesemi: resubmitted {len(todo)} point(s), each in its own run dir:\n" + "\n".join(lines), flush=True)
    return todo
