"""The training app: ``python -m sesemi.train [group=option ...] [key=value ...]``.

:func:`train` runs one job from a composed config and what the environment decided for it (a
:class:`~sesemi.runtime.Runtime`: strategy, plugins, signal handling, restart point); it is what tests and Python
callers use, and knows nothing of clusters. :func:`main` is the Hydra CLI around it: it asks
:mod:`sesemi.cluster.environment` for the runtime (or hands a multi-device job of an in-process sweep to
:mod:`sesemi.cluster.ranks`). The task function returns the objective (``run.objective``) as a float for sweepers.
"""

from __future__ import annotations

import logging
import os
import sys
import time
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from sesemi import checks, resolvers, resume, rundir
from sesemi.errors import ConfigError
from sesemi.runtime import RunStopped, Runtime
from sesemi.workspace import add_src_dir

log = logging.getLogger("sesemi")

resolvers.register()

# The EMA copy is kept in eval mode on purpose; Lightning's SLURM hint fires on every login node that has srun.
warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")
warnings.filterwarnings("ignore", message=r"The `srun` command is available on your system")


def _objective(cfg: DictConfig, trainer: Any) -> float:
    name = cfg.run.objective
    checkpoint = trainer.checkpoint_callback
    if checkpoint is not None and checkpoint.monitor == name and checkpoint.best_model_score is not None:
        return float(checkpoint.best_model_score)
    if name not in trainer.callback_metrics:
        raise ConfigError(
            "run.objective",
            f"{name!r} was never logged; logged metrics are {sorted(trainer.callback_metrics)}",
            "set run.objective to one of them",
        )
    return float(trainer.callback_metrics[name])


def _scalars(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in sorted(metrics.items()) if getattr(v, "numel", lambda: 1)() == 1}


def _checkpoint_path(path: str | None, key: str) -> str | None:
    """A checkpoint file, or a run dir standing for its ``checkpoints/last.ckpt`` (None when ``path`` is unset)."""
    return str(rundir.resolve_checkpoint(path, key, rundir.RESUME)) if path else None


def train(cfg: DictConfig, runtime: Runtime | None = None) -> dict[str, Any]:
    """Run one job (``run.mode``: fit, validate or test) in ``run.output_dir`` and return its metrics record.

    ``runtime``: what the environment decided (default: a plain local run, Lightning's own choices); the run
    executes inside its ``guard`` (e.g. the process's signals owned by the cluster layer's handler).
    """
    runtime = runtime or Runtime()
    with runtime.guard:
        return _train(cfg, runtime)


def _train(cfg: DictConfig, runtime: Runtime) -> dict[str, Any]:
    import pytorch_lightning as pl

    from sesemi.builders import build_datamodule, build_module, build_trainer
    from sesemi.callbacks import RecordNodes

    run_dir = Path(cfg.run.output_dir)
    runtime = replace(runtime, callbacks=[*runtime.callbacks, resume.ScheduleLength(), RecordNodes(str(run_dir))])
    record = rundir.RunRecord(run_dir)
    restart = runtime.restart_checkpoint  # a requeued SLURM job continues from its own checkpoint
    resumed = resume.resumed_run_dir(cfg)  # resumed in place: nothing in the run dir changes until accepted
    if resumed:
        resume.check_not_running(run_dir)
        cfg, changed = resume.continued_config(cfg, run_dir)
    else:
        record.start()
        if restart:
            record.note_attempt(resumed_from=restart)
            log.info("sesemi: requeued job resumes from %s", restart)
    recording = not resumed
    started = time.perf_counter()
    try:
        add_src_dir(cfg.run.get("src_dir"))
        pl.seed_everything(cfg.run.seed, workers=True, verbose=False)
        mode = cfg.run.mode
        if mode not in ("fit", "validate", "test"):
            raise ConfigError("run.mode", f"unknown mode {mode!r}", "use run.mode=fit, validate or test")
        checks.check_config(cfg)
        datamodule = build_datamodule(cfg)
        module = build_module(cfg, datamodule.num_classes, datamodule.class_names)
        datamodule.stream_start_steps = module.stream_start_steps(cfg.trainer.max_steps)
        trainer = build_trainer(cfg, runtime)
        checks.check_before_training(cfg, datamodule, module, trainer)
        if resumed:
            resume_from = restart or _checkpoint_path(cfg.run.resume, "run.resume")
            resume.check_checkpoint(module, resume_from, cfg.trainer.max_steps)
            resume.release_log_files()
            record.start()
            record.note_attempt(resumed_from=resume_from, overrides=resume.command_line(), changed=changed)
            recording = True
        log.info("data: %s", datamodule.describe())
        metrics: dict[str, Any] = {"mode": mode}
        if mode == "fit":
            if cfg.run.pretrained_checkpoint:
                module.load_pretrained(_checkpoint_path(cfg.run.pretrained_checkpoint, "run.pretrained_checkpoint"))
            ckpt_path = restart or _checkpoint_path(cfg.run.resume, "run.resume")
            trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
            if trainer.interrupted:
                raise KeyboardInterrupt("training was interrupted")
            metrics["objective"] = {
                "name": cfg.run.objective,
                "mode": cfg.run.objective_mode,
                "value": _objective(cfg, trainer),
            }
            checkpoint = trainer.checkpoint_callback
            if checkpoint is not None:
                # Written at every validation by the unmonitored `last_checkpoint` callback, improved or not
                # (Lightning's save_last follows the monitored saves only).
                last = rundir.last_checkpoint(run_dir)
                metrics["best_checkpoint"] = checkpoint.best_model_path or None
                metrics["last_checkpoint"] = str(last) if last.is_file() else None
            metrics["final"] = _scalars(trainer.callback_metrics)
            if datamodule.test_set is not None:
                best = metrics.get("best_checkpoint")
                results = trainer.test(module, datamodule=datamodule, ckpt_path=best, verbose=False)
                metrics["test"] = _scalars(results[0])
        else:
            ckpt = _checkpoint_path(cfg.run.checkpoint, "run.checkpoint")
            if ckpt is None:
                raise ConfigError("run.checkpoint", f"run.mode={mode} needs a checkpoint", "set run.checkpoint=<path>")
            evaluate = trainer.validate if mode == "validate" else trainer.test
            results = evaluate(module, datamodule=datamodule, ckpt_path=ckpt, verbose=False)
            metrics[mode] = _scalars(results[0])
            metrics["checkpoint"] = ckpt
        metrics["global_step"] = trainer.global_step
        metrics["classes"] = module.class_results  # last validation's and test's per-class accuracy, confusion matrix
        metrics["wall_time_s"] = round(time.perf_counter() - started, 2)
        metrics["run_dir"] = str(run_dir)
    except RunStopped:
        raise  # a signal stopped it after its checkpoint; status says requeued, cancelled or interrupted
    except BaseException as err:
        if recording:  # a refused resume leaves the run it points at as it was
            record.fail(err)
        raise
    record.complete(metrics)
    return metrics


def objective_value(metrics: dict[str, Any]) -> float:
    value = rundir.objective_value(metrics)
    return float("nan") if value is None else value


def run_here(cfg: DictConfig) -> dict[str, Any]:
    """Train ``cfg`` where this process is: the cluster layer decides the runtime (and starts DDP rank processes for
    a multi-device job of an in-process sweep)."""
    from sesemi.cluster.environment import runtime_for
    from sesemi.cluster.ranks import needs_rank_processes, train_in_rank_processes

    if needs_rank_processes(cfg):
        return train_in_rank_processes(cfg)
    try:
        runtime = runtime_for(cfg)
    except ConfigError as err:  # e.g. a SLURM job whose tasks do not match run.devices: a failed run, as in train
        record = rundir.RunRecord(cfg.run.output_dir)
        record.start()
        record.fail(err)
        raise
    return train(cfg, runtime)


@hydra.main(config_path="pkg://sesemi.configs", config_name="train")
def main(cfg: DictConfig) -> float:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from pytorch_lightning.utilities import rank_zero_info

    from sesemi import console

    console.quiet_library_noise()
    hydra_cfg = HydraConfig.get()
    single_run = hydra_cfg.mode == RunMode.RUN
    if resume.resumed_run_dir(cfg):
        resume.hold_log_files(Path(cfg.run.output_dir))  # the run's log is written only once the resume is accepted
    rank_zero_info(f"sesemi: run dir {cfg.run.output_dir}")
    try:
        metrics = run_here(cfg)
    except ConfigError as err:
        if not single_run:
            raise  # the sweeper records the failed job
        state = (rundir.read_status(cfg.run.output_dir) or {}).get("state", "none")
        print(f"sesemi: error: {err}\nsesemi: run dir (status {state}): {cfg.run.output_dir}", file=sys.stderr)
        sys.exit(2)
    rank_zero_info(console.final_lines(cfg, metrics, hydra_cfg.runtime.choices))
    return objective_value(metrics)


if __name__ == "__main__":
    os.environ.setdefault("HYDRA_FULL_ERROR", "0")
    main()
