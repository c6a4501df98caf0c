"""Resuming a run (``run.resume=<run dir or checkpoint>``) in its own run dir, as the continuation of that run.

- The run continues with its OWN config, ``.hydra/config.yaml`` of its run dir, whatever the defaults or the
  command line compose now. The command line may change only what a continuation can change
  (:data:`CONTINUATION_KEYS`: the number of steps, validation/logging/checkpoint cadence, devices, loader workers,
  where the data is); any other difference is one error naming the key. To train something else from a
  checkpoint, start a new run from its weights: ``run.pretrained_checkpoint=<ckpt>`` (a fresh run dir).
- The first attempt's ``.hydra/*.yaml`` are never rewritten (``hydra.output_subdir`` is null for a resume); every
  attempt's command line is in ``status.json``'s ``attempts`` (``overrides``, ``changed``, ``resumed_from``).
- Nothing in the run dir changes until the checkpoint has loaded into the built model and every check passed: the
  run's log file is held in memory until then, and its status is written only after.
- A run whose status says ``running`` with a live process on this host cannot be resumed a second time, and one
  attempt at a time trains in a run dir (:class:`sesemi.rundir.RunLock`: two resumes started together).
- A resume with no step left to train (the checkpoint at ``trainer.max_steps``) is refused (:func:`check_steps_left`).
- A run dir copied or moved elsewhere resumes there as the same run, its best score kept (:class:`CheckpointsMoved`).
- A longer ``trainer.max_steps`` stretches the step-based learning-rate schedule to end at the new last step,
  continuing from the learning rate the run had reached (it never goes back up): see :class:`ScheduleLength`.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import socket
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import Callback

from sesemi import rundir
from sesemi.errors import ConfigError

# What a continuation may change, as config keys (a key covers everything below it).
CONTINUATION_KEYS = (
    "run.resume",
    "trainer.max_steps",
    "trainer.val_check_interval",
    "trainer.log_every_n_steps",
    "trainer.limit_val_batches",
    "trainer.limit_test_batches",
    "callbacks.progress_bar",
    "callbacks.lr_monitor",
    "callbacks.images",
    "callbacks.checkpoint.every_n_train_steps",
    "callbacks.last_checkpoint.every_n_train_steps",
    "callbacks.heartbeat",
    "run.devices",
    "run.num_nodes",
    "run.accelerator",
    "run.strategy",
    "run.channels_last",
    "run.data_root",
    "run.src_dir",
    "data.num_workers",
    "data.persistent_workers",
    "data.pin_memory",
    "data.eval_batch_size",
)
FORK = (
    "drop it from the command line (a resumed run keeps its own config), or train the change as a new run from "
    "this checkpoint's weights: run.pretrained_checkpoint=<checkpoint> instead of run.resume"
)


def resumed_run_dir(cfg: DictConfig) -> Path | None:
    """The run dir this job resumes in place, or None (not a resume, or a checkpoint from outside any run dir)."""
    resume = cfg.run.get("resume")
    if not resume or cfg.run.get("mode", "fit") != "fit":
        return None
    found = rundir.find_run_dir(resume)
    return found if found is not None and found == Path(cfg.run.output_dir).absolute() else None


def _leaves(a: Any, b: Any, prefix: str = "") -> list[str]:
    """The keys at which two config containers differ (the shallowest key where one side has no such node)."""
    if isinstance(a, dict) and isinstance(b, dict):
        keys: list[str] = []
        for k in sorted(a.keys() | b.keys(), key=str):
            key = f"{prefix}.{k}" if prefix else str(k)
            keys += [key] if k not in a or k not in b else _leaves(a[k], b[k], key)
        return keys
    return [] if a == b else [prefix]


def _covered(key: str, prefixes: Iterable[str]) -> str | None:
    return next((p for p in prefixes if key == p or key.startswith(p + ".")), None)


def command_line() -> list[str] | None:
    """This attempt's command-line overrides (without Hydra's own ``hydra.*``); None outside a Hydra job."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    return [o for o in HydraConfig.get().overrides.task if not o.lstrip("+~").startswith("hydra")]


def _override_key(override: str) -> str:
    return override.lstrip("+~").split("=", 1)[0].split("@", 1)[0]


def _job_choices() -> dict[str, Any]:
    """Which option of each config group this job chose."""
    from hydra.core.hydra_config import HydraConfig

    return dict(HydraConfig.get().runtime.choices) if HydraConfig.initialized() else {}


def saved_choices(run_dir: Path) -> dict[str, Any]:
    """Which option of each config group the run chose (its first attempt's ``.hydra/hydra.yaml``)."""
    saved = run_dir / rundir.HYDRA_DIR / "hydra.yaml"
    return dict(OmegaConf.load(saved).hydra.runtime.choices) if saved.is_file() else {}


def continued_config(cfg: DictConfig, run_dir: Path) -> tuple[DictConfig, dict[str, Any]]:
    """The run's own saved config with this attempt's allowed changes, and those changes (key -> new value).

    What this attempt changes: its command-line overrides whose value (or group option) differs from the run's own;
    a Python caller without Hydra gives a whole config, and every difference from the run's own counts. Raises
    :class:`ConfigError` naming the first change a continuation may not make.
    """
    saved_path = run_dir / rundir.HYDRA_DIR / "config.yaml"
    if not saved_path.is_file():
        raise ConfigError(
            "run.resume", f"{run_dir} has no saved config ({saved_path})", "resume a run dir made by sesemi.train"
        )
    saved = OmegaConf.load(saved_path)
    now = OmegaConf.to_container(cfg, resolve=False)
    before = OmegaConf.to_container(saved, resolve=False)
    overrides = command_line()
    keys = _leaves(before, now) if overrides is None else [_override_key(o) for o in overrides]
    choices, before_choices = _job_choices(), saved_choices(run_dir)
    changed: dict[str, Any] = {}
    for key in keys:
        if key in choices:  # a config group: model=..., method=..., experiment=...
            if choices[key] == before_choices.get(key, choices[key]):
                continue
        elif _raw(now, key) == _raw(before, key):
            continue
        if _covered(key, CONTINUATION_KEYS) is None:
            raise ConfigError(key, "cannot change when resuming a run: it continues with its own config", FORK)
        changed[key] = _raw(now, key)
        OmegaConf.update(saved, key, changed[key], force_add=True)
    OmegaConf.set_struct(saved, True)
    return saved, changed


def _raw(container: Any, key: str) -> Any:
    for part in key.split("."):
        if not isinstance(container, dict) or part not in container:
            return None
        container = container[part]
    return container


def check_not_running(run_dir: Path) -> None:
    """Refuse a run whose status says running while its process is alive: the same pid alive on this host, or a
    fresh heartbeat from another host."""
    from pytorch_lightning.utilities import rank_zero_only

    if getattr(rank_zero_only, "rank", 0) != 0:
        return  # a DDP rank of this very attempt: rank 0 has already marked the run running
    status = rundir.read_status(run_dir) or {}
    attempt = (status.get("attempts") or [{}])[-1]
    if status.get("state") != "running":
        return
    if attempt.get("host") != socket.gethostname():
        beat = rundir.last_heartbeat(status)
        age = (datetime.now(timezone.utc) - beat).total_seconds() if beat else None
        if age is not None and age < rundir.HEARTBEAT_STALE_S:
            raise ConfigError(
                "run.resume",
                f"{run_dir} is running now on {attempt.get('host')} (pid {attempt.get('pid')}, last heartbeat "
                f"{age:.0f} s ago)",
                f"wait for it to end or stop it there, then resume (a run silent for {rundir.HEARTBEAT_STALE_S:.0f} s "
                "counts as gone)",
            )
        return
    pid = attempt.get("pid")
    try:
        os.kill(int(pid), 0)
    except (TypeError, ValueError, ProcessLookupError):
        return  # the process that marked it running is gone (killed without a status update)
    except PermissionError:
        pass  # alive, someone else's
    raise ConfigError(
        "run.resume",
        f"{run_dir} is running now (pid {pid} on this host, since {attempt.get('started')})",
        "wait for it to end or stop it (kill -TERM <pid> saves a checkpoint), then resume",
    )


def read_checkpoint(checkpoint: str) -> dict[str, Any]:
    """The training state a resume continues from (refused when it could run code, is empty or cut off, or holds
    no weights)."""
    from sesemi.checkpoints import load_checkpoint

    state = load_checkpoint(checkpoint, "run.resume")
    if not isinstance(state, dict) or "state_dict" not in state:
        raise ConfigError(
            "run.resume",
            f"cannot load {checkpoint}: it is no training checkpoint (no state_dict)",
            "resume from another checkpoint of the run (checkpoints/best.ckpt) or start a new run",
        )
    return state


def check_steps_left(step: int, max_steps: int | None, checkpoint: str) -> None:
    """A resume must have a step left to train: one without would report the old result as a new one (and a copied
    run dir, which never logs its objective in this process, would turn failed)."""
    if max_steps is None or max_steps <= 0 or step < max_steps:
        return
    raise ConfigError(
        "trainer.max_steps",
        f"is {max_steps}, but the run already trained {step} steps ({checkpoint}), so a resume has none left to "
        "train; nothing was changed",
        f"resume with a larger trainer.max_steps, e.g. trainer.max_steps={2 * step if step > 0 else 1}",
    )


def check_checkpoint(module: Any, checkpoint: str, max_steps: int, state: dict[str, Any] | None = None) -> None:
    """The checkpoint loads (``state``: as :func:`read_checkpoint` read it), its weights fit the built model exactly,
    and a longer run would still learn: all before anything in the run dir changes."""
    state = read_checkpoint(checkpoint) if state is None else state
    weights = state["state_dict"]
    try:
        module.load_state_dict(weights, strict=True)
    except RuntimeError as err:
        raise ConfigError(
            "run.resume",
            f"{checkpoint} does not fit this run's model: {str(err).splitlines()[0]}",
            "resume a checkpoint of this run, with this run's own model",
        ) from err
    step = int(state.get("global_step", 0))
    check_steps_left(step, max_steps, checkpoint)
    lrs = [g["lr"] for opt in state.get("optimizer_states", []) for g in opt.get("param_groups", [])]
    if max_steps > step and lrs and max(lrs) < 1e-12:
        raise ConfigError(
            "trainer.max_steps",
            f"asks for steps {step + 1}..{max_steps}, but the run's learning-rate schedule already ended at 0 "
            f"(step {step}); a resumed schedule continues from where it is, so the extra steps would not learn",
            "start a new run from this checkpoint's weights with a schedule of its own: "
            f"run.pretrained_checkpoint={checkpoint}",
        )


class _HeldLog(logging.handlers.MemoryHandler):
    """Keeps the records meant for a run dir's log file until the resume is accepted (then writes them)."""

    released = False

    def shouldFlush(self, record: logging.LogRecord) -> bool:
        return self.released

    def flush(self) -> None:
        if self.released:
            super().flush()


def hold_log_files(run_dir: Path) -> None:
    """Hold every log file handler writing into ``run_dir`` (Hydra's job log) until :func:`release_log_files`."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, logging.FileHandler) and Path(handler.baseFilename).parent == run_dir.absolute():
            held = _HeldLog(capacity=10**6, target=handler, flushOnClose=False)
            held.setLevel(handler.level)
            root.removeHandler(handler)
            root.addHandler(held)


def release_log_files() -> None:
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, _HeldLog):
            handler.released = True
            handler.flush()
            root.removeHandler(handler)
            root.addHandler(handler.target)


class ScheduleLength(Callback):
    """Stretches the restored learning-rate schedules to a changed ``trainer.max_steps``.

    A scheduler's state is restored from the checkpoint, its length included. Where that length is the previous
    ``trainer.max_steps`` (``T_max`` of ``lr_scheduler=cosine``, ``total_steps`` of ``fixmatch_cosine``) it is set
    to the new one. Both schedules are chainable: each step multiplies the current learning rate by the ratio of
    the curve at this step to the last, so the run continues from the learning rate it had reached, decreasing,
    and ends at the end value at the new last step (cosine: ``eta_min``). ``constant`` has no length.
    """

    LENGTH_KEYS = ("T_max", "total_steps")

    def on_load_checkpoint(self, trainer: Any, pl_module: Any, checkpoint: dict[str, Any]) -> None:
        previous = ((checkpoint.get("sesemi_config") or {}).get("trainer") or {}).get("max_steps")
        if previous is None or previous == trainer.max_steps:
            return
        for state in checkpoint.get("lr_schedulers", []):
            for key in self.LENGTH_KEYS:
                if state.get(key) == previous:
                    state[key] = trainer.max_steps


class CheckpointsMoved(Callback):
    """Keeps the best score of a run dir that was copied or moved, when it is resumed where it is now.

    Lightning's ``ModelCheckpoint`` restores its best score, its top-k and its last path only from a checkpoint that
    names its own ``dirpath``; from a copy of a run dir it restored only the best path (the original's) and forgot
    the score, so the next validation wrote a worse model over ``best.ckpt`` and ``metrics.json``. The checkpoint a
    resume continues from lies in the run's own ``checkpoints/``: when it is in a ``ModelCheckpoint``'s dirpath but
    its state names another one (where the run was when it saved), that state is this run's, and its paths are
    moved to the dirpath they are in now before Lightning loads it. A checkpoint from elsewhere is left alone.
    """

    PATHS = ("best_model_path", "kth_best_model_path", "last_model_path")

    def on_load_checkpoint(self, trainer: Any, pl_module: Any, checkpoint: dict[str, Any]) -> None:
        if not trainer.ckpt_path:
            return
        here = os.path.realpath(os.path.dirname(os.path.abspath(trainer.ckpt_path)))
        states = checkpoint.get("callbacks") or {}
        for callback in trainer.checkpoint_callbacks:
            state = states.get(callback.state_key)
            if not state or callback.dirpath is None or os.path.realpath(callback.dirpath) != here:
                continue
            before = state.get("dirpath")
            if before and before != callback.dirpath:
                self._relocate(state, before, callback.dirpath)

    @classmethod
    def _relocate(cls, state: dict[str, Any], before: str, now: str) -> None:
        def moved(path: Any) -> Any:
            if not path or os.path.dirname(str(path)) != before:
                return path
            return os.path.join(now, os.path.basename(str(path)))

        for key in cls.PATHS:
            if key in state:
                state[key] = moved(state[key])
        if isinstance(state.get("best_k_models"), dict):
            state["best_k_models"] = {moved(path): score for path, score in state["best_k_models"].items()}
        state["dirpath"] = now
