"""Helpers of the cluster tests: a test-only callback package for the jobs, background launches, dir listings."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path

import pytest
import yaml
from conftest import FAST
from faults import assert_each_step_once, assert_strictly_increasing, tensorboard_steps

# docs/cluster.md's example of a cluster profile of one's own, in the workspace's configs/.
MYCLUSTER_PROFILE = """\
defaults:
  - slurm
  - _self_
partition: a100
account: mylab
setup: ["module load cuda/12.1"]
additional_parameters: {mail-type: END}
"""

# Written into <launch dir>/src/ (run.src_dir), so jobs on the cluster import it like a user's own package.
RANKCHECK_SOURCE = '''
"""Test-only: each rank writes what it trained with and a hash of its final weights; optionally slows a run's
first start down (so that it can be requeued mid-training), not the starts that resume it from a checkpoint: a job
that SLURM or submitit requeued before its run started is slowed down too."""
import hashlib, json, os, time
from pathlib import Path

import torch
from pytorch_lightning.callbacks import Callback


class RankCheck(Callback):
    def __init__(self, out_dir, slow_s=0.0):
        self.out_dir = Path(out_dir)
        self.slow_s = float(slow_s)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.slow_s and trainer.ckpt_path is None:
            time.sleep(self.slow_s)

    def on_train_end(self, trainer, pl_module):
        weights = hashlib.sha256()
        for key, value in sorted(pl_module.state_dict().items()):
            if isinstance(value, torch.Tensor):
                weights.update(key.encode())
                weights.update(value.detach().cpu().contiguous().numpy().tobytes())
        config = json.dumps(pl_module.config, sort_keys=True, default=str)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        record = {
            "rank": trainer.global_rank,
            "world_size": trainer.world_size,
            "weights": weights.hexdigest(),
            "config": hashlib.sha256(config.encode()).hexdigest(),
            "lr": pl_module.config["optimizer"]["lr"],
            "run_dir": pl_module.config["run"]["output_dir"],
            "step": trainer.global_step,
            "pid": os.getpid(),
            "strategy": type(trainer.strategy).__name__,
            "environment": type(trainer.strategy.cluster_environment).__name__
            if getattr(trainer.strategy, "cluster_environment", None) is not None else None,
        }
        (self.out_dir / f"{os.getpid()}_rank{trainer.global_rank}.json").write_text(json.dumps(record))
'''

# The commands docs/cluster.md shows, exactly; the tests run them (after the tiny training settings of FAST, and
# with test-only additions after them). test_cluster_docs.py checks that the page shows no other command.
DOC_COMMANDS = {
    "dry_run": [
        "-m",
        "hydra/launcher=slurm",
        "run.id=lr_scan",
        "optimizer.lr=0.01,0.03,0.1",
        "hydra.launcher.partition=gpu",
        "run.devices=4",
        "hydra.launcher.dry_run=true",
    ],
    "dry_run_multinode": [
        "-m",
        "hydra/launcher=slurm",
        "run.devices=4",
        "run.num_nodes=2",
        "hydra.launcher.dry_run=true",
    ],
    "dry_run_profile": ["-m", "hydra/launcher=mycluster", "run.devices=2", "hydra.launcher.dry_run=true"],
    "dry_run_devices": ["-m", "hydra/launcher=slurm_cpu", "run.devices=1,2", "hydra.launcher.dry_run=true"],
    "mismatch": [
        "-m",
        "hydra/launcher=slurm",
        "run.devices=2",
        "hydra.launcher.tasks_per_node=4",
        "optimizer.lr=0.01,0.1",
    ],
    "sweep": [
        "-m",
        "hydra/launcher=slurm_cpu",
        "hydra.launcher.partition=debug",
        "run.id=lr_scan",
        "optimizer.lr=0.01,0.1",
    ],
    "detached": [
        "-m",
        "hydra/launcher=slurm_cpu",
        "hydra.launcher.partition=debug",
        "run.id=lr_scan",
        "optimizer.lr=0.01,0.1",
        "hydra.launcher.wait=false",
    ],
    "packed": [
        "-m",
        "hydra/launcher=slurm_cpu",
        "hydra.launcher.partition=debug",
        "run.id=packed",
        "optimizer.lr=0.01,0.02,0.03",
        "hydra.launcher.points_per_job=3",
    ],
    "many_points": [
        "-m",
        "hydra/launcher=slurm_cpu",
        "hydra.launcher.partition=debug",
        "run.id=many",
        "run.seed=range(2000)",
        "hydra.launcher.wait=false",
    ],
    "ddp": ["-m", "hydra/launcher=slurm_cpu", "hydra.launcher.partition=debug", "run.id=ddp", "run.devices=2"],
    "requeue": ["-m", "hydra/launcher=slurm_cpu", "hydra.launcher.partition=debug", "run.id=requeue", "run.devices=2"],
    "timelimit": [
        "-m",
        "hydra/launcher=slurm_cpu",
        "hydra.launcher.partition=debug",
        "run.id=timelimit",
        "hydra.launcher.timeout_min=3",
        "hydra.launcher.signal_delay_s=60",
    ],
    "two_nodes": [
        "-m",
        "hydra/launcher=slurm_cpu",
        "hydra.launcher.partition=debug",
        "run.id=nodes",
        "run.num_nodes=2",
    ],
    "two_nodes_timelimit": [
        "-m",
        "hydra/launcher=slurm_cpu",
        "hydra.launcher.partition=debug",
        "run.id=nodes_timelimit",
        "run.num_nodes=2",
        "hydra.launcher.timeout_min=3",
        "hydra.launcher.signal_delay_s=60",
    ],
    "local_sweep_ddp": ["-m", "run.id=local_ddp", "run.devices=2", "run.accelerator=cpu", "optimizer.lr=0.01,0.1"],
    "local_launcher": ["-m", "hydra/launcher=local", "run.id=sublocal", "run.devices=2", "run.accelerator=cpu"],
    "single_ddp": ["run.devices=2", "run.accelerator=cpu"],
}

# The time-limit tests' runs: slowed down in their first start until SLURM's USR2 comes mid-training. The signal is
# due 120 s after the job started (timeout_min=3, signal_delay_s=60; SLURM may send it up to a minute early): 3 s per
# step keeps training going past it. On a loaded 2-core machine the job's processes may take over a minute to start:
# a signal before training requeues the job (submitit), and the run's first start is then the requeued job's.
TIMELIMIT_RUN = ["trainer.max_steps=60", "trainer.val_check_interval=10"]
TIMELIMIT_SLOW_S = 3.0

needs_slurm = pytest.mark.skipif(
    shutil.which("sinfo") is None,
    reason="sinfo not found: no SLURM client here (start the test cluster with scripts/slurm_cluster.sh start)",
)


def install_rankcheck(workdir: Path) -> None:
    package = workdir / "src" / "sesemi_rankcheck"
    package.mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text(RANKCHECK_SOURCE)


def rankcheck_overrides(out_dir: Path, slow_s: float = 0.0) -> list[str]:
    overrides = [
        "+callbacks.rankcheck._target_=sesemi_rankcheck.RankCheck",
        f"+callbacks.rankcheck.out_dir={out_dir}",
    ]
    if slow_s:
        overrides.append(f"+callbacks.rankcheck.slow_s={slow_s}")
    return overrides


def rank_records(out_dir: Path) -> list[dict]:
    return sorted((json.loads(p.read_text()) for p in out_dir.glob("*.json")), key=lambda r: (r["run_dir"], r["rank"]))


def cli(args: Sequence[str], fast: bool = True, defaults: Sequence[str] | None = None) -> list[str]:
    """The command line; ``defaults``: the tiny settings put first (FAST, or FAULT for a fault test)."""
    if defaults is None:
        defaults = FAST if fast else []
    return [sys.executable, "-m", "sesemi.train", *defaults, *args]


def subdirs(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir() if p.is_dir()) if path.is_dir() else []


def the_sweep_dir(workdir: Path, run_id: str) -> Path:
    """The one sweep dir of ``run_id`` (also checks that no second, stray one was claimed)."""
    (sweep_dir,) = [workdir / "runs" / run_id / name for name in subdirs(workdir / "runs" / run_id)]
    return sweep_dir


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


class Launch:
    """``python -m sesemi.train ARGS`` started in the background in its own launch dir, with an optional action run
    in a thread while it works (e.g. requeue its job once a checkpoint exists)."""

    def __init__(
        self,
        name: str,
        workdir: Path,
        args: Sequence[str],
        action: Callable[[Launch], None] | None = None,
        timeout: float = 420,
        ranks_dir: Path | None = None,
        defaults: Sequence[str] = FAST,
    ) -> None:
        self.name, self.workdir, self.timeout, self.ranks_dir = name, workdir, timeout, ranks_dir
        self.intervention = ""
        workdir.mkdir(parents=True, exist_ok=True)
        install_rankcheck(workdir)
        self.log = (workdir / "launch.log").open("w")
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            cli(args, defaults=defaults),
            cwd=workdir,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "HYDRA_FULL_ERROR": "0"},
        )
        self.action_error: BaseException | None = None
        self.thread = None
        if action is not None:
            self.thread = threading.Thread(target=self._act, args=(action,), daemon=True)
            self.thread.start()

    def _act(self, action: Callable[[Launch], None]) -> None:
        try:
            action(self)
        except BaseException as err:  # noqa: BLE001 - reported by wait()
            self.action_error = err

    def wait(self) -> tuple[int, str]:
        try:
            rc = self.proc.wait(timeout=max(1.0, self.timeout - (time.monotonic() - self.started)))
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        if self.thread is not None:
            self.thread.join(timeout=30)
        self.log.close()
        output = (self.workdir / "launch.log").read_text()
        self.elapsed = time.monotonic() - self.started
        if self.action_error is not None:
            raise AssertionError(f"{self.name}: the action failed: {self.action_error}\n{output[-3000:]}")
        return rc, output

    def wait_for(self, predicate: Callable[[], object], what: str, timeout: float = 240, poll_s: float = 0.5) -> object:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name}: the launch ended before {what}")
            time.sleep(poll_s)
        raise AssertionError(f"{self.name}: timed out waiting for {what}")


def run_status(workdir: Path, run_dir_glob: str) -> dict:
    """The status.json of the first run dir matching the glob; empty until one is written and readable."""
    for status in workdir.glob(f"{run_dir_glob}/status.json"):
        try:
            return json.loads(status.read_text())
        except ValueError:
            return {}
    return {}


def first_attempt_job_id(run_dir_glob: str, workdir: Path) -> Callable[[], str | None]:
    def probe() -> str | None:
        attempts = run_status(workdir, run_dir_glob).get("attempts") or [{}]
        return attempts[0].get("slurm_job_id")

    return probe


def cancel_jobs(workdir: Path) -> None:
    """scancel the SLURM jobs a launch in ``workdir`` submitted (cleanup after a failed test)."""
    ids = [job["job_id"] for path in workdir.glob("runs/*/*/jobs.json") for job in read_json(path)["jobs"]]
    if ids and shutil.which("scancel"):
        subprocess.run(["scancel", *ids], capture_output=True, check=False)


def check_requeued(launch: Launch, run_id: str, reason: str, max_steps: int, world: int) -> dict:
    """A requeued job (``reason``: the signal) ended completed in its one run dir: every attempt recorded, the same
    SLURM job, ``max_steps`` steps, no step logged twice, every rank with the same final weights, loader workers on.
    Returns its status.json."""
    rc, output = launch.wait()
    assert rc == 0, f"{launch.name} exited {rc}:\n{output[-6000:]}"
    sweep_dir = the_sweep_dir(launch.workdir, run_id)
    assert subdirs(sweep_dir) == [".code", ".submitit", "0"]  # resumed in the same run dir
    run_dir = sweep_dir / "0"
    status = read_json(run_dir / "status.json")
    assert status["state"] == "completed", status
    assert status["restarts"] >= 1 and len(status["attempts"]) == status["restarts"] + 1
    assert status["requeue_reason"].startswith(reason), status["requeue_reason"]
    first, second = status["attempts"][:2]
    assert first["previous_state"] is None and second["previous_state"] == "requeued"
    assert first["slurm_job_id"] == second["slurm_job_id"]  # the same job, requeued
    last = run_dir / "checkpoints" / "last.ckpt"
    assert second["resumed_from"] == str(last)
    metrics = read_json(run_dir / "metrics.json")
    assert metrics["global_step"] == max_steps and metrics["last_checkpoint"] == str(last)
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]  # no -v1
    # The same TensorBoard run continues: one event dir, one event file per attempt, no step twice or backwards.
    events = list(run_dir.glob("events.out.tfevents.*"))
    assert 2 <= len(events) <= len(status["attempts"])
    for tag in ("train/loss", "val/acc"):
        assert_strictly_increasing(tensorboard_steps(run_dir, tag), tag)
    config = yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text())
    # As TensorBoard shows it: every step of every tag once, no gap at the steps the signals stopped the run at.
    assert_each_step_once(run_dir, max_steps, val_every=config["trainer"]["val_check_interval"])
    ranks = rank_records(launch.ranks_dir)
    assert len(ranks) == world and {r["step"] for r in ranks} == {max_steps}
    assert len({r["weights"] for r in ranks}) == 1
    assert config["data"]["num_workers"] == 2 and config["data"]["persistent_workers"] is True  # workers on
    logs = "".join(p.read_text() for p in (sweep_dir / ".submitit").rglob("*_log.err"))
    assert "DataLoader worker" not in logs and "A temporary saved file already exists" not in logs
    assert "1 jobs: 1 completed" in output
    return status


def fake_sweep(root: Path, states: list[str], executor: str = "local") -> Path:
    """A sweep dir as the launcher leaves it, one job per state: jobs.json, each run's status.json (and
    metrics.json where completed), without running anything: for the status table and its states."""
    sweep = root / "runs" / "scan" / "20260101_120000"
    jobs = []
    for num, state in enumerate(states):
        run_dir = sweep / str(num)
        run_dir.mkdir(parents=True)
        record = {"state": state, "restarts": 0, "attempts": [{"started": "2026-01-01T11:00:00+00:00"}]}
        record["progress"] = {"step": 5, "max_steps": 10, "heartbeat": datetime.now(timezone.utc).isoformat()}
        if state == "failed":
            record["error"] = "ValueError: boom"
        (run_dir / "status.json").write_text(json.dumps(record))
        if state == "completed":
            (run_dir / "metrics.json").write_text(json.dumps({"objective": {"value": 0.5}, "global_step": 10}))
        overrides = ["trainer.max_steps=10", f"optimizer.lr=0.{num}", "hydra.launcher.partition=debug"]
        jobs.append({"num": num, "job_id": f"9_{num}", "run_dir": str(run_dir), "overrides": overrides})
    (sweep / "jobs.json").write_text(json.dumps({"executor": executor, "jobs": jobs}))
    return sweep


# The built-in digits search as a SLURM sweep on the test cluster's CPUs (tests/sweep/test_sweep_*.py).
SLURM_SWEEP = [
    "-m",
    "hparams_search=digits_fixmatch",
    "hydra/launcher=slurm_cpu",
    "hydra.launcher.partition=debug",
    "hydra.launcher.cpus_per_task=1",
]
