"""The training app: ``python -m sesemi.train [group=option ...] [key=value ...]`` (and ``sesemi-train``).

This is the one door into training. Hydra composes the config and calls :func:`task` for every job, wherever it
runs: a single run, a job of a grid on any launcher, a SLURM task, a sweep trial (the sweep hands its trial callback
in as ``callbacks``), and the DDP rank processes of a multirun job (started as this same app, see
:mod:`sesemi.cluster.ranks`). :func:`task` is where a process's :class:`~sesemi.runtime.Runtime` is built (what the
environment decides: :func:`sesemi.cluster.environment.runtime_for`) and handed to the core's
:func:`sesemi.training.train`; it returns ``run.objective`` for sweepers.

Nothing heavy is imported before a job runs: ``--help``, ``--cfg job``, ``--info`` and shell completion answer
without torch or Lightning.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from sesemi import resolvers
from sesemi.compat import hydra as hydra_compat
from sesemi.errors import ConfigError
from sesemi.runtime import RANK_PROCESS_ENV

APP_CONFIG = "pkg://sesemi.configs"


def task(cfg: DictConfig, callbacks: Sequence[Any] = ()) -> float:
    """Train ``cfg`` in this process and return its objective; ``callbacks``: Lightning callbacks of whoever runs
    the job (a sweep's trial callback), added to the run's own."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from pytorch_lightning.utilities import rank_zero_info

    from sesemi import console, resume, rundir
    from sesemi.training import objective_value

    console.setup_console()
    hydra_cfg = HydraConfig.get()
    if os.environ.get(RANK_PROCESS_ENV):  # a DDP rank of a sweep job: the job process reports the run
        try:
            return objective_value(train_here(cfg))
        except ConfigError:
            sys.exit(2)  # recorded in the run dir by rank 0, which the job process reads
    run_dir = Path(cfg.run.output_dir)
    resumed = resume.resumed_run_dir(cfg) is not None
    if resumed:
        resume.hold_log_files(run_dir)  # the run's log is written only once the resume is accepted
    rank_zero_info(f"sesemi: run dir {run_dir}")
    try:
        metrics = train_here(cfg, callbacks)
    except ConfigError as err:
        if hydra_cfg.mode != RunMode.RUN:
            console.log_failure(err)
            raise  # the sweeper or launcher records the failed job
        state = rundir.state_of(run_dir) or "none"  # the line on stderr and in train.log
        logging.getLogger("sesemi").error("sesemi: error: %s\nsesemi: run dir (status %s): %s", err, state, run_dir)
        sys.exit(2)
    except Exception as err:  # a failure (a signal's stop or Ctrl-C is none): its traceback in train.log too
        console.log_failure(err)
        raise
    choices = resume.saved_choices(run_dir) if resumed else dict(hydra_cfg.runtime.choices)
    rank_zero_info(console.final_lines(cfg, metrics, choices))
    return objective_value(metrics)


def train_here(cfg: DictConfig, callbacks: Sequence[Any] = ()) -> dict[str, Any]:
    """Train ``cfg`` where this process is, on the runtime its environment decides; a multi-device job of a sweep
    that runs inside the sweep's own process gets rank processes of its own."""
    from sesemi import rundir
    from sesemi.cluster.environment import runtime_for
    from sesemi.cluster.ranks import needs_rank_processes, train_in_rank_processes
    from sesemi.training import train

    if needs_rank_processes(cfg):
        return train_in_rank_processes(cfg)
    try:
        runtime = runtime_for(cfg, callbacks)
    except ConfigError as err:  # e.g. a SLURM job whose tasks do not match run.devices: a failed run, as in train
        record = rundir.RunRecord(cfg.run.output_dir)
        record.start()
        record.fail(err)
        raise
    return train(cfg, runtime)


@hydra_compat.main(config_path=APP_CONFIG, config_name="train")
def main(cfg: DictConfig, callbacks: Sequence[Any] = ()) -> float:
    """The Hydra task function (what sweepers and launchers call, see :func:`task`)."""
    return task(cfg, callbacks)


def run() -> None:
    """The console script and ``python -m sesemi.train``: Hydra's own error output for Python tracebacks is off by
    default (sesemi's errors are one line each)."""
    from sesemi.sweep import storage

    os.environ.setdefault("HYDRA_FULL_ERROR", "0")
    _complete_the_console_script()
    resolvers.register()
    storage.register()
    main()


def _complete_the_console_script() -> None:
    """Hydra's shell completion completes an app by its command name (the ``sesemi-train`` console script) or as
    ``python <file>.py``, never as ``python -m <module>`` (its bash function gives up on a ``-`` after ``python``). So
    ``python -m sesemi.train -sc install=bash`` installs (and ``uninstall=`` removes) the completion of
    ``sesemi-train``, the same app, and says so, instead of a rule for ``python`` that never completes."""
    args = sys.argv[1:]
    asks = any(a in ("-sc", "--shell-completion") for a in args)
    installs = any(a.startswith(("install=", "uninstall=")) for a in args)
    if not (asks and installs and sys.argv[0].endswith(".py")):
        return
    sys.argv[0] = "sesemi-train"
    if any(a.startswith("install=") for a in args):
        print(
            "sesemi: TAB completes the sesemi-train command (the same app as python -m sesemi.train; Hydra's "
            "completion cannot complete python -m): sesemi-train <TAB>",
            file=sys.stderr,
        )


if __name__ == "__main__":
    run()
