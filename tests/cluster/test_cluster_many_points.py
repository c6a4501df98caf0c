"""A 2,000-point grid on the real test cluster (MaxArraySize 1001): submitted held, as two job arrays, every point
in jobs.json with its own run dir, ``python -m sesemi.status`` over all of them; cancelled at the end. Nothing
trains (the jobs are held), and no timing is asserted (benchmarks/cluster_submit.py measures it)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cluster_testkit import DOC_COMMANDS
from conftest import FAST, read_json

from sesemi.cluster import slurm

pytestmark = [
    pytest.mark.slow,
    pytest.mark.slurm,
    pytest.mark.skipif(shutil.which("sinfo") is None, reason="no SLURM client (scripts/slurm_cluster.sh start)"),
]

POINTS = 2000
# docs/cluster.md's command (DOC_COMMANDS), then what only the test adds: held jobs on the test cluster's CPUs.
HELD = [
    *DOC_COMMANDS["many_points"],
    "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.additional_parameters={hold:true}",
]
assert f"run.seed=range({POINTS})" in HELD


def _cli(module: str, args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, capture_output=True, text=True, timeout=600)


def test_2000_held_points_submit_as_two_arrays_and_sesemi_status_reads_them(tmp_path: Path):
    max_array = slurm.limits().max_array_size
    if max_array >= POINTS:
        pytest.skip(f"MaxArraySize is {max_array}: 2,000 points fit one array here")
    proc = _cli("sesemi.train", [*FAST, *HELD], tmp_path)
    jobs_files = list(tmp_path.glob("runs/many/*/jobs.json"))
    arrays: list[str] = []
    try:
        if jobs_files:
            arrays = sorted({j["job_id"].split("_")[0] for j in read_json(jobs_files[0])["jobs"]})
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
        (jobs_file,) = jobs_files
        sweep = jobs_file.parent
        jobs = read_json(jobs_file)["jobs"]
        # Every point, once, with its own run dir and its own seed.
        assert [j["num"] for j in jobs] == list(range(POINTS))
        assert [j["run_dir"] for j in jobs] == [str(sweep / str(n)) for n in range(POINTS)]
        assert all(f"run.seed={j['num']}" in j["overrides"] for j in jobs)
        # Two arrays, split at MaxArraySize: tasks 0..max-1 of the first, the rest in the second.
        assert len(arrays) == 2, arrays
        tasks = {
            a: sorted(int(j["job_id"].split("_")[1]) for j in jobs if j["job_id"].startswith(f"{a}_")) for a in arrays
        }
        assert tasks[arrays[0]] == list(range(max_array)) and tasks[arrays[1]] == list(range(POINTS - max_array))
        assert f"sesemi: submitted {POINTS} job(s) to slurm: {arrays[0]}_0, " in proc.stdout
        queue = subprocess.run(
            ["squeue", "-h", "-r", "-j", ",".join(arrays), "-o", "%i %T %r"], capture_output=True, text=True
        ).stdout.split("\n")
        held = [line for line in queue if line.endswith(" PENDING JobHeldUser")]
        assert len(held) == POINTS, queue[:5]

        # sesemi.status over the 2,000 points: one sacct call, the counts first, no row needs attention.
        status = _cli("sesemi.status", [str(sweep)], tmp_path)
        assert status.returncode == 1, status.stdout + status.stderr  # not all completed
        assert status.stdout == f"{POINTS} jobs: {POINTS} pending\n", status.stdout[-2000:]  # no row needs attention
    finally:
        if arrays:
            subprocess.run(["scancel", *arrays], capture_output=True, check=False)
