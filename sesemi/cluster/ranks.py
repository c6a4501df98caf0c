"""DDP ranks of a local multirun job as fresh processes: ``python -m sesemi.cluster.ranks CONFIG.yaml [--result R]``.

A multi-device job of a sweep that runs inside the sweep's own process (Hydra's basic launcher, the Optuna
sweepers) cannot use Lightning's ``ddp`` (it re-executes ``sys.argv``: the whole sweep) nor ``ddp_spawn`` (it
pickles the module's Hydra ``_partial_`` factories). :func:`train_in_rank_processes` starts ``run.devices`` fresh
processes on the job's resolved config, like ``torchrun``, and the job process only waits for them; each runs
:func:`main`, i.e. :func:`sesemi.train.train` with the runtime its environment decides (``LOCAL_RANK``,
``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT`` set), and writes its outcome to ``--result``.

Why a third way of starting local processes beside :mod:`sesemi.sweep.local` and submitit's local executor: those
start one process per *sweep job*; this starts the *ranks of one job*, below whichever launcher ran the job, so no
sweep launcher needs to know about DDP. The reason is structural, not a measurement: Hydra's basic launcher and
the Optuna sweepers run a job inside their own process, and a 2-device job there has no other way to get its
second process. (``hydra/launcher=local``, submitit's executor, starts the ranks as its tasks and needs none of
this.)
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

# No module-level import of Lightning here: a rank process configures logging first (Lightning adds handlers of its
# own when it is imported before the root logger has one, and its messages would then miss the job's log file).
from sesemi.errors import ConfigError
from sesemi.rundir import RunRecord, read_metrics, read_status


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


def _job_log_file() -> str | None:
    """The Hydra job's log file (rank 0 appends to it, as if it ran in the job process)."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            return handler.baseFilename
    return None


def train_in_rank_processes(cfg: DictConfig) -> dict[str, Any]:
    """Run ``sesemi.train.train`` in ``run.devices`` fresh processes (DDP ranks) and return rank 0's metrics.

    Every rank gets the job's fully resolved config (same hyperparameters, same run dir); Lightning sees
    ``LOCAL_RANK``/``WORLD_SIZE``/``MASTER_PORT`` and starts no processes itself. Rank 0 writes the run dir as in
    any run. If a rank fails the others are stopped, and the job fails with rank 0's error (or the failed rank's).
    """
    run = cfg.run
    if int(run.num_nodes) != 1:
        raise ConfigError(
            "run.num_nodes",
            f"is {run.num_nodes}, but a local sweep job runs on this machine",
            "set run.num_nodes=1, or launch the sweep with -m hydra/launcher=slurm",
        )
    from sesemi.cluster.environment import num_devices

    n = num_devices(run)
    run_dir = Path(str(run.output_dir))
    resolved = OmegaConf.to_container(cfg, resolve=True)
    with tempfile.TemporaryDirectory(prefix="sesemi-ranks-") as tmp:
        config_path = Path(tmp) / "config.yaml"
        config_path.write_text(OmegaConf.to_yaml(OmegaConf.create(resolved)))
        env = {
            **os.environ,
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(_free_port()),
            "WORLD_SIZE": str(n),
            "NODE_RANK": "0",
        }
        log_file = _job_log_file()
        procs = []
        try:
            for rank in range(n):
                cmd = [
                    sys.executable,
                    "-m",
                    "sesemi.cluster.ranks",
                    str(config_path),
                    "--result",
                    str(Path(tmp) / f"rank{rank}.json"),
                ]
                if rank == 0 and log_file:
                    cmd += ["--log-file", log_file]
                procs.append(subprocess.Popen(cmd, env={**env, "LOCAL_RANK": str(rank), "RANK": str(rank)}))
            failed: int | None = None
            while any(p.poll() is None for p in procs):
                failed = next((r for r, p in enumerate(procs) if p.returncode not in (None, 0)), None)
                if failed is not None:
                    break
                time.sleep(0.2)
            if failed is None:
                failed = next((r for r, p in enumerate(procs) if p.returncode != 0), None)
        finally:
            for p in procs:  # a failed rank leaves the others waiting in a collective: stop them
                if p.poll() is None:
                    p.terminate()
            for p in procs:
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        results = {}
        for rank in range(n):
            path = Path(tmp) / f"rank{rank}.json"
            if path.is_file():
                results[rank] = json.loads(path.read_text())
    status = read_status(run_dir) or {}
    if failed is None and status.get("state") == "completed":
        return read_metrics(run_dir) or {}
    # Rank 0's error if it has one, else the first failed rank's.
    result = results.get(0) if results.get(0, {}).get("error") else results.get(failed or 0, {})
    if result.get("type") == "ConfigError":
        err: BaseException = ConfigError(result["key"], result["problem"], result["fix"])
    else:
        rank = failed if failed is not None else 0
        code = procs[rank].returncode if procs else None
        err = RuntimeError(
            f"DDP rank {rank} of {n} failed (exit code {code}): {result.get('error') or 'see its stderr'}"
        )
    if status.get("state") not in ("failed", "completed"):
        RunRecord(run_dir).fail(err)
    raise err


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sesemi.cluster.ranks")
    parser.add_argument("config")
    parser.add_argument("--result", default=None)
    parser.add_argument("--log-file", default=None)
    args = parser.parse_args(argv)

    handlers: list[logging.Handler] = [logging.StreamHandler()]
    if args.log_file:
        handlers.append(logging.FileHandler(args.log_file))
    logging.basicConfig(
        level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s", handlers=handlers
    )
    from sesemi.cluster.environment import runtime_for  # after the logging set-up (see the imports above)
    from sesemi.train import train

    cfg = OmegaConf.load(args.config)
    outcome: dict = {"error": None}
    try:
        train(cfg, runtime_for(cfg))
        return 0
    except ConfigError as err:
        outcome = {"error": str(err), "type": "ConfigError", "key": err.key, "problem": err.problem, "fix": err.fix}
        raise
    except BaseException as err:
        outcome = {"error": f"{type(err).__name__}: {err}", "type": type(err).__name__}
        raise
    finally:
        if args.result:
            Path(args.result).write_text(json.dumps(outcome))


if __name__ == "__main__":
    sys.exit(main())
