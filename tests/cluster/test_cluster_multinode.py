"""Two SLURM nodes on this one machine (``scripts/slurm_cluster.sh start --nodes 2``): one DDP process group over
both nodes, and a time-limit requeue of a 2-node job; then plain ``start`` returns to the single node.

The module switches the test cluster to 2 nodes (node1, node2: slurmds in network and UTS namespaces of their own)
and back to the single node `vm` in its teardown, whatever happened, so the rest of the suite finds the cluster as
it was. Changing the node set needs an empty queue; the switch waits for one.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from cluster_testkit import (
    DOC_COMMANDS,
    TIMELIMIT_RUN,
    TIMELIMIT_SLOW_S,
    Launch,
    cancel_jobs,
    check_requeued,
    needs_slurm,
    rank_records,
    rankcheck_overrides,
    read_json,
    subdirs,
    the_sweep_dir,
)
from faults import FAULT

REPO = Path(__file__).resolve().parents[2]
NODES = ["node1", "node2"]
HOSTS_MARK = "# sesemi-slurm-nodes"

pytestmark = [
    pytest.mark.slurm,
    pytest.mark.slow,
    needs_slurm,
    pytest.mark.skipif(
        os.geteuid() != 0 or shutil.which("ip") is None or shutil.which("nsenter") is None,
        reason="switching the test cluster to 2 nodes needs root, ip (iproute2) and nsenter",
    ),
]

SMALL = ["hydra.launcher.cpus_per_task=1"]  # as in test_cluster_slurm.py
SHOW_HOST = "echo $(hostname) $(ip -4 -o addr show eth0 | cut -d' ' -f7)"  # run on each node by srun


def cluster(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(REPO / "scripts" / "slurm_cluster.sh"), *args], capture_output=True, text=True, timeout=300, check=False
    )


def wait_for_empty_queue(timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while subprocess.run(["squeue", "-h"], capture_output=True, text=True).stdout.strip():
        assert time.monotonic() < deadline, "the SLURM queue did not empty: the cluster's nodes cannot change"
        time.sleep(2)


def network_state() -> dict:
    """What the 2-node mode adds to this machine: namespaces, the bridge, /etc/hosts lines."""
    return {
        "netns": subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split(),
        "bridge": subprocess.run(["ip", "-o", "link", "show", "type", "bridge"], capture_output=True, text=True).stdout,
        "hosts": [line for line in Path("/etc/hosts").read_text().splitlines() if HOSTS_MARK in line],
    }


@pytest.fixture(scope="module")
def launches(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("nodes")
    wait_for_empty_queue()
    started: dict[str, Launch] = {}
    try:
        up = cluster("start", "--nodes", "2")
        assert up.returncode == 0, up.stderr[-4000:]
        started["up"] = up  # type: ignore[assignment]
        # Loader workers on (FAULT): 2 persistent DataLoader workers per rank, on each node.
        started["nodes"] = Launch(
            "nodes",
            root / "nodes",
            [*DOC_COMMANDS["two_nodes"], *SMALL, *rankcheck_overrides(root / "nodes_ranks")],
            ranks_dir=root / "nodes_ranks",
            defaults=FAULT,
        )
        # A real time limit (3 minutes, USR2 60 s before) on a 2-node job, slow in its first start.
        started["timelimit"] = Launch(
            "timelimit",
            root / "timelimit",
            [
                *TIMELIMIT_RUN,
                *DOC_COMMANDS["two_nodes_timelimit"],
                *SMALL,
                *rankcheck_overrides(root / "tl_ranks", TIMELIMIT_SLOW_S),
            ],
            timeout=600,
            ranks_dir=root / "tl_ranks",
            defaults=FAULT,
        )
        yield started
    finally:
        for launch in started.values():
            if isinstance(launch, Launch) and launch.proc.poll() is None:
                launch.proc.kill()
                launch.proc.wait()
                cancel_jobs(launch.workdir)
        wait_for_empty_queue()
        back = cluster("start")  # the single node again (a no-op after the last test)
        assert back.returncode == 0, back.stderr[-4000:]


def test_start_with_two_nodes_gives_two_nodes_in_namespaces_of_their_own(launches):
    up = launches["up"]
    assert "node(s) node1 node2" in up.stderr
    sinfo = subprocess.run(["sinfo", "-h", "-N", "-o", "%N %c"], capture_output=True, text=True).stdout.split("\n")
    assert [line.split() for line in sinfo if line] == [["node1", "4"], ["node2", "4"]]
    state = network_state()
    assert {"sesemi-node1", "sesemi-node2"} <= set(state["netns"]) and "sesemi-br0" in state["bridge"]
    assert state["hosts"] == [f"10.77.0.11 node1 {HOSTS_MARK}", f"10.77.0.12 node2 {HOSTS_MARK}"]
    # Each node has its own hostname and address; this machine's are unchanged.
    step = subprocess.run(
        ["srun", "-p", "debug", "-N2", "-n2", "sh", "-c", SHOW_HOST],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert sorted(step.stdout.split("\n")[:2]) == ["node1 10.77.0.11/24", "node2 10.77.0.12/24"], step
    assert subprocess.run(["hostname"], capture_output=True, text=True).stdout.strip() not in NODES


def test_a_two_node_job_trains_one_process_group_over_both_nodes(launches):
    launch = launches["nodes"]
    rc, output = launch.wait()
    assert rc == 0, f"exited {rc}:\n{output[-6000:]}"
    run_dir = the_sweep_dir(launch.workdir, "nodes") / "0"
    status = read_json(run_dir / "status.json")
    assert status["state"] == "completed" and status["restarts"] == 0
    (attempt,) = status["attempts"]
    assert attempt["nodes"] == NODES and attempt["world_size"] == 2 and attempt["host"] == "node1"
    assert read_json(run_dir / "metrics.json")["global_step"] == 6
    ranks = rank_records(launch.ranks_dir)
    assert [(r["rank"], r["world_size"], r["step"]) for r in ranks] == [(0, 2, 6), (1, 2, 6)]
    assert ranks[0]["weights"] == ranks[1]["weights"] and {r["environment"] for r in ranks} == {"SLURMEnvironment"}
    logs = "".join(p.read_text() for p in (run_dir.parent / ".submitit").rglob("*_log.*"))
    assert "Initializing distributed: GLOBAL_RANK: 0, MEMBER: 1/2" in logs
    assert "Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2" in logs
    assert "1 jobs: 1 completed" in output


def test_time_limit_of_a_two_node_job_requeues_and_finishes(launches):
    launch = launches["timelimit"]
    status = check_requeued(launch, "nodes_timelimit", "SIGUSR2", max_steps=60, world=2)
    assert all(a["nodes"] == NODES and a["world_size"] == 2 for a in status["attempts"]), status["attempts"]


def test_plain_start_returns_to_the_single_node(launches):
    for launch in launches.values():
        if isinstance(launch, Launch):
            launch.wait()
    wait_for_empty_queue()
    back = cluster("start")
    assert back.returncode == 0, back.stderr[-4000:]
    assert "removing network namespace sesemi-node1" in back.stderr and "removing bridge sesemi-br0" in back.stderr
    sinfo = subprocess.run(["sinfo", "-h", "-N", "-o", "%N %T"], capture_output=True, text=True).stdout.split()
    assert sinfo == [subprocess.run(["hostname", "-s"], capture_output=True, text=True).stdout.strip(), "idle"]
    assert network_state() == {"netns": [], "bridge": "", "hosts": []}
    assert subdirs(launches["nodes"].workdir / "runs") == ["nodes"]
