"""DDP ranks of a multi-device job that runs inside a sweep's own process, started as the training app itself.

A multi-device job of a sweep that runs inside the sweep's process (Hydra's basic launcher, the Optuna sweepers)
cannot use Lightning's ``ddp`` (it re-executes ``sys.argv``: the whole sweep) nor ``ddp_spawn`` (it pickles the
module's Hydra ``_partial_`` factories). :func:`train_in_rank_processes` does what Lightning's ``ddp`` does for a
single run, with the job's own config: it writes the job's resolved config into a temporary dir and starts
``run.devices`` processes of the training app on it (``python -m sesemi.train --config-path <dir>
--config-name config hydra.run.dir=<run dir>``), with ``LOCAL_RANK``/``WORLD_SIZE``/``MASTER_PORT`` set, so
each rank enters training through the app's one door (:func:`sesemi.train.task`) and Lightning starts no
processes itself. The job process only waits; a failed rank stops the others at once (a rank left alone would
wait in a collective until its timeout).

This is one of sesemi's two hand-written process spawners (the other starts the points of a packed job,
:mod:`sesemi.cluster.packing`): sweep jobs that need processes of their own run on submitit's
local executor (``hydra/launcher=local``), whose controller waits for every task of a job until the job's time
limit when one task fails, which is what a DDP job must not do.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from sesemi.errors import ConfigError
from sesemi.rundir import RunRecord, RunState, read_metrics, read_status
from sesemi.runtime import RANK_PROCESS_ENV


def needs_rank_processes(cfg: DictConfig) -> bool:
    """True for a multi-device job of a multirun that runs inside the sweep's process (not a submitit/SLURM task)."""
    from sesemi.cluster.environment import launch_context, world_size

    run = cfg.run
    if "LOCAL_RANK" in os.environ or run.strategy not in ("auto", "ddp"):
        return False
    try:
        return world_size(run) > 1 and launch_context(run) == "multirun"
    except ConfigError:
        return False  # reported by build_trainer, with the run dir's status


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rank_command(config_dir: Path, run_dir: Path, rank: int) -> list[str]:
    """The command line of one rank: the training app on the job's resolved config, in the job's run dir (rank 0
    appends to the run's ``train.log``; the other ranks log to their stderr)."""
    return [
        sys.executable,
        "-m",
        "sesemi.train",
        "--config-path",
        str(config_dir),
        "--config-name",
        "config",
        f"hydra.run.dir={run_dir}",
        "hydra.output_subdir=null",  # .hydra/ is the job's, written by the job process
        "hydra.job.chdir=false",
        "hydra.job.name=train",
        *([] if rank == 0 else ["hydra/job_logging=stdout"]),
    ]


def _wait(procs: list[subprocess.Popen]) -> int | None:
    """Wait for every rank; the first rank that failed (its index), or None. A failure stops the others."""
    failed: int | None = None
    try:
        while failed is None and any(p.poll() is None for p in procs):
            failed = next((r for r, p in enumerate(procs) if p.returncode not in (None, 0)), None)
            time.sleep(0.2)
        if failed is None:
            failed = next((r for r, p in enumerate(procs) if p.returncode != 0), None)
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
    return failed


def train_in_rank_processes(cfg: DictConfig) -> dict[str, Any]:
    """Run the job in ``run.devices`` fresh processes (DDP ranks) and return its metrics record.

    Rank 0 keeps the run dir's record as in any run; if a rank fails, the job fails with the run's recorded error
    (a :class:`ConfigError` again when it was one), else with the failed rank's exit code.
    """
    from sesemi.cluster.environment import num_devices

    run = cfg.run
    if int(run.num_nodes) != 1:
        raise ConfigError(
            "run.num_nodes",
            f"is {run.num_nodes}, but a local sweep job runs on this machine",
            "set run.num_nodes=1, or launch the sweep with -m hydra/launcher=slurm",
        )
    n = num_devices(run)
    run_dir = Path(str(run.output_dir))
    env = {
        **os.environ,
        RANK_PROCESS_ENV: "1",  # the job process reports the run
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(_free_port()),
        "WORLD_SIZE": str(n),
        "NODE_RANK": "0",
    }
    with tempfile.TemporaryDirectory(prefix="sesemi-ranks-") as tmp:
        (Path(tmp) / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.to_container(cfg, resolve=True)))
        procs = [
            subprocess.Popen(
                rank_command(Path(tmp), run_dir, rank), env={**env, "LOCAL_RANK": str(rank), "RANK": str(rank)}
            )
            for rank in range(n)
        ]
        failed = _wait(procs)
    status = read_status(run_dir) or {}
    if failed is None and status.get("state") == RunState.COMPLETED:
        return read_metrics(run_dir) or {}
    err = _recorded_error(status) or RuntimeError(
        f"DDP rank {failed or 0} of {n} failed (exit code {procs[failed or 0].returncode}); see its stderr"
    )
    if status.get("state") not in (RunState.FAILED, RunState.COMPLETED):
        RunRecord(run_dir).fail(err)
    raise err


def _recorded_error(status: dict[str, Any]) -> BaseException | None:
    """The error the run's record holds (rank 0 records it), as the exception it was where that matters."""
    if status.get("state") != RunState.FAILED:
        return None
    config_error = status.get("config_error")
    if config_error:
        return ConfigError(config_error["key"], config_error["problem"], config_error["fix"])
    return RuntimeError(str(status.get("error") or "a DDP rank failed"))
