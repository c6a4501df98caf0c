"""``train(cfg, runtime)``: one job (``run.mode``: fit, validate or test) from its composed config, in its run dir.

The pipeline reads top to bottom as data → model → trainer → fit → metrics; the run dir's record around it is
:mod:`sesemi.bookkeeping`'s. What the environment decided (strategy, plugins, signal handling, the restart point of
a requeued job, a sweep's trial callback) arrives as a :class:`~sesemi.runtime.Runtime`; this module knows nothing
of SLURM, sweeps or how its processes were started. Every way of running a job ends here: the CLI
(:mod:`sesemi.train`), a DDP rank process, a SLURM task, a sweep trial.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import Any

from omegaconf import DictConfig

from sesemi import checks, console, resume, rundir
from sesemi.bookkeeping import RecordedRun, recorded_run
from sesemi.errors import ConfigError
from sesemi.runtime import Runtime
from sesemi.workspace import add_src_dir

log = logging.getLogger("sesemi")

MODES = ("fit", "validate", "test")


def train(cfg: DictConfig, runtime: Runtime | None = None) -> dict[str, Any]:
    """Run one job in ``run.output_dir`` and return its metrics record (what ``metrics.json`` holds).

    ``runtime``: what the environment decided (default: a plain local run, Lightning's own choices); the job runs
    inside its ``guard`` (e.g. the process's signals owned by the cluster layer's handler).
    """
    runtime = runtime or Runtime()
    with runtime.guard, recorded_run(cfg, runtime) as run:
        metrics = _pipeline(run, runtime)
        run.complete(metrics)
        return metrics


def _pipeline(run: RecordedRun, runtime: Runtime) -> dict[str, Any]:
    import pytorch_lightning as pl

    from sesemi.builders import build_datamodule, build_module, build_trainer
    from sesemi.callbacks import RecordNodes

    cfg = run.cfg
    started = time.perf_counter()
    add_src_dir(cfg.run.get("src_dir"))
    pl.seed_everything(cfg.run.seed, workers=True, verbose=False)
    mode = cfg.run.mode
    if mode not in MODES:
        raise ConfigError("run.mode", f"unknown mode {mode!r}", "use run.mode=fit, validate or test")
    checks.check_config(cfg)
    # Where training continues (a resume with no step left is refused here, before anything is built): TensorBoard
    # hides what an earlier attempt logged from that step on, e.g. the steps a `kill -9` made it log after its last
    # checkpoint, which this attempt logs again (0: the run dir starts from scratch, nothing before counts).
    start_step = run.start_step()
    datamodule = build_datamodule(cfg)
    module = build_module(cfg, datamodule.num_classes, datamodule.class_names)
    datamodule.stream_start_steps = module.stream_start_steps(cfg.trainer.max_steps)
    callbacks = [*runtime.callbacks, resume.ScheduleLength(), resume.CheckpointsMoved(), RecordNodes(str(run.run_dir))]
    trainer = build_trainer(cfg, replace(runtime, callbacks=callbacks), purge_step=start_step or 0)
    checks.check_before_training(cfg, datamodule, module, trainer)
    run.accept(module, cfg.trainer.max_steps)
    log.info("data: %s", datamodule.describe())
    if mode == "fit":
        metrics = _fit(cfg, run, datamodule, module, trainer)
    else:
        metrics = _evaluate(cfg, mode, datamodule, module, trainer)
    metrics["global_step"] = trainer.global_step
    # What the summary lines say, from the config this run trained with (a resume's own, not today's defaults).
    metrics["seed"] = cfg.run.seed
    if mode == "fit":
        metrics["stopped_by"] = console.stop_reason(cfg, trainer.global_step)
    metrics["classes"] = module.class_results  # last validation's and test's per-class accuracy, confusion matrix
    metrics["wall_time_s"] = round(time.perf_counter() - started, 2)
    metrics["run_dir"] = str(run.run_dir)
    return metrics


def _fit(cfg: DictConfig, run: RecordedRun, datamodule: Any, module: Any, trainer: Any) -> dict[str, Any]:
    if cfg.run.pretrained_checkpoint:
        module.load_pretrained(_checkpoint(cfg.run.pretrained_checkpoint, "run.pretrained_checkpoint"))
    trainer.fit(module, datamodule=datamodule, ckpt_path=run.resume_from)
    if trainer.interrupted:
        raise KeyboardInterrupt("training was interrupted")
    metrics: dict[str, Any] = {"mode": "fit", "objective": _objective(cfg, trainer)}
    checkpoint = trainer.checkpoint_callback
    if checkpoint is not None:
        # Written at every validation by the unmonitored `last_checkpoint` callback, improved or not
        # (Lightning's save_last follows the monitored saves only).
        last = rundir.last_checkpoint(run.run_dir)
        metrics["best_checkpoint"] = checkpoint.best_model_path or None
        metrics["last_checkpoint"] = str(last) if last.is_file() else None
    metrics["final"] = _scalars(trainer.callback_metrics)
    if datamodule.test_set is not None:
        results = trainer.test(module, datamodule=datamodule, ckpt_path=metrics.get("best_checkpoint"), verbose=False)
        metrics["test"] = _scalars(results[0])
    return metrics


def _evaluate(cfg: DictConfig, mode: str, datamodule: Any, module: Any, trainer: Any) -> dict[str, Any]:
    if not cfg.run.checkpoint:
        raise ConfigError("run.checkpoint", f"run.mode={mode} needs a checkpoint", "set run.checkpoint=<path>")
    ckpt = _checkpoint(cfg.run.checkpoint, "run.checkpoint")
    checks.check_eval_checkpoint(module, ckpt, "run.checkpoint")
    evaluate = trainer.validate if mode == "validate" else trainer.test
    results = evaluate(module, datamodule=datamodule, ckpt_path=ckpt, verbose=False)
    return {"mode": mode, mode: _scalars(results[0]), "checkpoint": ckpt}


def _objective(cfg: DictConfig, trainer: Any) -> dict[str, Any]:
    """``run.objective``'s best value (the one the best checkpoint was chosen by), else its last logged value."""
    name = cfg.run.objective
    checkpoint = trainer.checkpoint_callback
    if checkpoint is not None and checkpoint.monitor == name and checkpoint.best_model_score is not None:
        value = float(checkpoint.best_model_score)
    elif name in trainer.callback_metrics:
        value = float(trainer.callback_metrics[name])
    else:
        raise ConfigError(
            "run.objective",
            f"{name!r} was never logged; logged metrics are {sorted(trainer.callback_metrics)}",
            "set run.objective to one of them",
        )
    return {"name": name, "mode": cfg.run.objective_mode, "value": value}


def _scalars(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in sorted(metrics.items()) if getattr(v, "numel", lambda: 1)() == 1}


def _checkpoint(path: str, key: str) -> str:
    """A checkpoint file, or a run dir standing for its ``checkpoints/last.ckpt``."""
    return str(rundir.resolve_checkpoint(path, key, rundir.RESUME))


def objective_value(metrics: dict[str, Any]) -> float:
    """The number a sweeper optimises: the metrics record's objective (NaN when it has none)."""
    value = rundir.objective_value(metrics)
    return float("nan") if value is None else value
