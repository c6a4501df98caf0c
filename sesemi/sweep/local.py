"""Local processes for a sweep that runs on Hydra's default launcher.

Hydra's basic launcher runs jobs one after the other inside the sweeper's process. When a sweep asks for more than
one trial (``n_jobs``) or worker at a time on it, the sweeper starts each job as a process of its own instead, all at
once, with ``python -m sesemi.sweep.local <job file>``: the job file holds what Hydra's launchers pickle for a job
(the Hydra context, the config, the task and the job's overrides). On a machine with several GPUs, job k sees GPU
``k mod n`` only. Output goes to ``<job file>.out``; a killed job leaves no ``.result`` file.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger("sesemi.sweep")


def _visible_gpus() -> list[str]:
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g for g in env.split(",") if g.strip()]
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())]
    except Exception:  # noqa: BLE001
        return []


class LocalProcesses:
    def __init__(self, hydra_context: Any, config: Any, task_function: Any, folder: Path) -> None:
        self.hydra_context = hydra_context
        self.config = config
        self.task_function = task_function
        self.folder = Path(folder)
        self.procs: dict[str, subprocess.Popen] = {}

    def launch(
        self,
        job_overrides: Sequence[Sequence[str]],
        initial_job_idx: int,
        names: Sequence[str] | None = None,
    ) -> list[str | None]:
        """Run the jobs concurrently and wait for all; returns per job None (ran) or why it did not."""
        import cloudpickle
        from hydra.core.singleton import Singleton

        self.folder.mkdir(parents=True, exist_ok=True)
        gpus = _visible_gpus()
        names = list(names or [f"job_{initial_job_idx + i}" for i in range(len(job_overrides))])
        started = []
        for i, overrides in enumerate(job_overrides):
            path = self.folder / f"{names[i]}.pkl"
            payload = {
                "hydra_context": self.hydra_context,
                "config": self.config,
                "task_function": self.task_function,
                "overrides": list(overrides),
                "job_num": initial_job_idx + i,
                "job_id": names[i],
                "singleton_state": Singleton.get_state(),
            }
            path.write_bytes(cloudpickle.dumps(payload))
            env = dict(os.environ)
            if len(gpus) > 1:
                env["CUDA_VISIBLE_DEVICES"] = gpus[i % len(gpus)]
            out = open(path.with_suffix(".out"), "ab")  # noqa: SIM115 - closed when the process ends
            proc = subprocess.Popen(
                [sys.executable, "-m", "sesemi.sweep.local", str(path)], stdout=out, stderr=subprocess.STDOUT, env=env
            )
            out.close()
            self.procs[names[i]] = proc
            started.append((path, proc))
            log.info("local job %s (pid %d): %s", names[i], proc.pid, " ".join(overrides))
        while [proc.poll() for _, proc in started].count(None):  # poll() every one: it also reaps the ended
            time.sleep(0.5)
        errors: list[str | None] = []
        for path, proc in started:
            result = path.with_suffix(".result")
            if result.is_file():
                errors.append(json.loads(result.read_text()).get("error"))
            else:
                errors.append(
                    f"lost: process {proc.pid} ended with code {proc.returncode} ({path.with_suffix('.out')})"
                )
        return errors


def _main(path: str) -> int:
    import cloudpickle
    from hydra.core.singleton import Singleton
    from hydra.core.utils import JobStatus, run_job, setup_globals
    from omegaconf import open_dict

    import sesemi.train  # noqa: F401  (the resolvers of the built-in configs)
    from sesemi.compat.hydra import job_error

    payload = cloudpickle.loads(Path(path).read_bytes())
    Singleton.set_state(payload["singleton_state"])
    setup_globals()
    context = payload["hydra_context"]
    config = context.config_loader.load_sweep_config(payload["config"], payload["overrides"])
    with open_dict(config):
        config.hydra.job.id = payload["job_id"]
        config.hydra.job.num = payload["job_num"]
    ret = run_job(
        hydra_context=context,
        task_function=payload["task_function"],
        config=config,
        job_dir_key="hydra.sweep.dir",
        job_subdir_key="hydra.sweep.subdir",
    )
    error = None
    if ret.status == JobStatus.FAILED:
        err = job_error(ret)
        error = f"{type(err).__name__}: {err}"
    Path(path).with_suffix(".result").write_text(json.dumps({"error": error}))
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1]))
