"""Shared helpers: compose the real configs, and run the real CLI in a subprocess, on tiny settings."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest
from omegaconf import DictConfig

from sesemi import compose

# A few optimisation steps on the embedded digits: enough to exercise every part of a run in seconds.
FAST = [
    "trainer.max_steps=6",
    "trainer.val_check_interval=3",
    "trainer.log_every_n_steps=1",
    "data.labels_per_class=4",
    "data.labeled_batch_size=8",
    "data.unlabeled_batch_size=16",
    "data.num_workers=0",
    "callbacks.progress_bar=null",
]


def pytest_configure(config: pytest.Config) -> None:
    """A suite started in the background (``cmd &`` in a script, or under nohup) inherits SIGINT ignored, and so
    would every CLI it starts: a Python process that starts with SIGINT ignored never raises KeyboardInterrupt, so
    the Ctrl-C tests would signal a launcher that cannot hear it and wait out their timeouts. The suite takes the
    default handler back; the processes it starts then start with SIGINT as a terminal gives it."""
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


# The suite runs on pytest-xdist workers (``-n auto`` in pyproject.toml), a test module at a time on a worker, so that
# a module-scoped fixture (several launches started together, then checked test by test) is set up once. The SLURM
# tests share one cluster that some of them cancel jobs on, requeue, or restart with two nodes: every module with a
# test marked ``slurm`` is one unit of work, run one module after another on one worker. The controller that deals
# out the work collects no tests, so it finds those modules by their marker in the source; each worker checks, as
# it collects, that no SLURM test is outside them.
_ROOT = Path(__file__).resolve().parent.parent
SLURM_MODULES = frozenset(
    p.relative_to(_ROOT).as_posix() for p in (_ROOT / "tests").rglob("test_*.py") if "mark.slurm" in p.read_text()
)


def _module(nodeid: str) -> str:
    return nodeid.split("::", 1)[0]


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    from xdist.scheduler import LoadScopeScheduling

    class ModulesAndOneClusterScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return "slurm" if _module(nodeid) in SLURM_MODULES else _module(nodeid)

    return ModulesAndOneClusterScheduling(config, log)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    outside = [i.nodeid for i in items if i.get_closest_marker("slurm") and _module(i.nodeid) not in SLURM_MODULES]
    if outside:
        raise pytest.UsageError(f"SLURM tests in modules the scheduler does not know as SLURM modules: {outside}")


@pytest.fixture(autouse=True)
def _same_random_state() -> None:
    """Every test starts from the same random state, whichever worker runs it and whatever ran before it there."""
    import random

    import numpy as np
    import torch

    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


def compose_config(output_dir: Path, overrides: Sequence[str] = ()) -> DictConfig:
    return compose([*FAST, *overrides], output_dir=output_dir)


def run_cli(
    args: Sequence[str],
    cwd: Path,
    *,
    fast: bool = True,
    check: bool = True,
    env: dict | None = None,
    module: str = "sesemi.train",
    timeout: float = 600,
) -> subprocess.CompletedProcess:
    """``python -m sesemi.train ARGS`` in ``cwd``, as a user would type it."""
    cmd = [sys.executable, "-m", module, *(FAST if fast else []), *args]
    proc = subprocess.run(
        cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")
    return proc


def sacct(job_ids: list[str]) -> dict[str, str]:
    """SLURM's state of each job (``CANCELLED by 0`` read as ``CANCELLED``), from the accounting database."""
    out = subprocess.run(
        ["sacct", "-X", "-n", "-P", "-o", "JobID,State", "-j", ",".join(job_ids)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {job: state.split()[0] for job, state in (line.split("|", 1) for line in out.split())}


def run_dirs(root: Path) -> list[Path]:
    """All run dirs (those with a status file) below ``root``."""
    return sorted(p.parent for p in root.rglob("status.json"))


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty launch directory, as a user's fresh workspace."""
    monkeypatch.chdir(tmp_path)
    return tmp_path
