"""The training app: ``python -m sesemi.train [group=option ...] [key=value ...]``.

:func:`train` runs one job from a composed config and is what tests and Python callers use; :func:`main` is the
Hydra CLI around it. The task function returns the objective (``run.objective``) as a float for sweepers.
"""

from __future__ import annotations

import logging
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from sesemi import resolvers
from sesemi.errors import ConfigError

log = logging.getLogger("sesemi")

resolvers.register()

# The EMA copy is kept in eval mode on purpose; Lightning's SLURM hint fires on every login node that has srun.
warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")
warnings.filterwarnings("ignore", message=r"The `srun` command is available on your system")


def add_src_dir(src_dir: str | None) -> None:
    """Make the user's ``src/`` packages importable for ``_target_`` (no setup.py needed)."""
    if not src_dir:
        return
    path = Path(src_dir).absolute()
    if path.is_dir() and str(path) not in sys.path:
        sys.path.insert(0, str(path))


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
    """A checkpoint file, or a run dir standing for its ``checkpoints/last.ckpt``."""
    if not path:
        return None
    p = Path(path)
    if p.is_dir():
        p = p / "checkpoints" / "last.ckpt"
    if not p.is_file():
        raise ConfigError(key, f"no checkpoint at {p}", "give a .ckpt file or a run dir with checkpoints/last.ckpt")
    return str(p)


def train(cfg: DictConfig) -> dict[str, Any]:
    """Run one job (``run.mode``: fit, validate or test) in ``run.output_dir`` and return its metrics record."""
    import pytorch_lightning as pl

    from sesemi.builders import build_datamodule, build_module, build_trainer
    from sesemi.cluster.requeue import Requeued, note_resumed, restart_checkpoint
    from sesemi.launch import needs_rank_processes, train_in_rank_processes
    from sesemi.rundir import RunRecord

    if needs_rank_processes(cfg):  # a DDP job inside a local sweep: its ranks are fresh processes
        return train_in_rank_processes(cfg)
    run_dir = Path(cfg.run.output_dir)
    record = RunRecord(run_dir)
    restart = restart_checkpoint(run_dir)  # a requeued SLURM job continues from its own checkpoint
    record.start()
    if restart:
        note_resumed(record, restart)
    started = time.perf_counter()
    try:
        add_src_dir(cfg.run.get("src_dir"))
        pl.seed_everything(cfg.run.seed, workers=True, verbose=False)
        mode = cfg.run.mode
        if mode not in ("fit", "validate", "test"):
            raise ConfigError("run.mode", f"unknown mode {mode!r}", "use run.mode=fit, validate or test")
        datamodule = build_datamodule(cfg)
        module = build_module(cfg, datamodule.num_classes, datamodule.class_names)
        trainer = build_trainer(cfg)
        log.info("data: %s", datamodule.describe())
        metrics: dict[str, Any] = {"mode": mode}
        if mode == "fit":
            if cfg.run.pretrained_checkpoint:
                module.load_pretrained(_checkpoint_path(cfg.run.pretrained_checkpoint, "run.pretrained_checkpoint"))
            resume = restart or _checkpoint_path(cfg.run.resume, "run.resume")
            trainer.fit(module, datamodule=datamodule, ckpt_path=resume)
            if trainer.interrupted:
                raise KeyboardInterrupt("training was interrupted")
            metrics["objective"] = {
                "name": cfg.run.objective,
                "mode": cfg.run.objective_mode,
                "value": _objective(cfg, trainer),
            }
            checkpoint = trainer.checkpoint_callback
            if checkpoint is not None:
                metrics["best_checkpoint"] = checkpoint.best_model_path or None
                metrics["last_checkpoint"] = checkpoint.last_model_path or None
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
        metrics["wall_time_s"] = round(time.perf_counter() - started, 2)
        metrics["run_dir"] = str(run_dir)
    except Requeued:
        raise  # checkpointed and marked requeued; the job comes back and resumes
    except BaseException as err:
        record.fail(err)
        raise
    record.complete(metrics)
    return metrics


def objective_value(metrics: dict[str, Any]) -> float:
    if "objective" in metrics:
        return float(metrics["objective"]["value"])
    results = metrics[metrics["mode"]]
    return float(next((v for k, v in results.items() if k.endswith("/acc")), float("nan")))


@hydra.main(config_path="pkg://sesemi.configs", config_name="train")
def main(cfg: DictConfig) -> float:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from pytorch_lightning.utilities import rank_zero_info

    from sesemi import console

    console.quiet_library_noise()
    hydra_cfg = HydraConfig.get()
    single_run = hydra_cfg.mode == RunMode.RUN
    rank_zero_info(f"sesemi: run dir {cfg.run.output_dir}")
    try:
        metrics = train(cfg)
    except ConfigError as err:
        if not single_run:
            raise  # the sweeper records the failed job
        print(f"sesemi: error: {err}\nsesemi: run dir (status failed): {cfg.run.output_dir}", file=sys.stderr)
        sys.exit(2)
    rank_zero_info(console.final_lines(cfg, metrics, hydra_cfg.runtime.choices))
    return objective_value(metrics)


if __name__ == "__main__":
    os.environ.setdefault("HYDRA_FULL_ERROR", "0")
    main()
