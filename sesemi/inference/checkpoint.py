"""A trained sesemi checkpoint for inference: where it is, what is in it, which weights and class names to use."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from sesemi import rundir
from sesemi.checkpoints import load_checkpoint
from sesemi.errors import ConfigError
from sesemi.inference.build import instantiate

log = logging.getLogger("sesemi")

WEIGHTS = ("auto", "ema", "model")


def resolve_checkpoint(path: str | os.PathLike | None, key: str = "checkpoint") -> Path:
    """A checkpoint file, or a run dir standing for its ``checkpoints/best.ckpt`` (else ``last.ckpt``)."""
    return rundir.resolve_checkpoint(path, key, rundir.INFERENCE)


def checkpoint_run_dir(checkpoint: str | os.PathLike) -> Path:
    """The run dir a checkpoint belongs to (the one with ``status.json``), else the folder above ``checkpoints/``."""
    return rundir.run_dir_of_checkpoint(checkpoint)


def read_checkpoint(path: Path) -> dict[str, Any]:
    """The checkpoint's contents; the one place inference reads a checkpoint file."""
    state = load_checkpoint(path)
    if not isinstance(state, Mapping) or not state.get("sesemi_config") or "state_dict" not in state:
        raise ConfigError(
            "checkpoint",
            f"{path} is not a sesemi training checkpoint (no sesemi_config)",
            "use a checkpoint written by python -m sesemi.train",
        )
    return dict(state)


def choose_weights(weights: str, cfg: DictConfig, state_dict: Mapping[str, Tensor]) -> str:
    """``ema`` or ``model``: ``auto`` takes the EMA weights when the run evaluated with them."""
    if weights not in WEIGHTS:
        raise ConfigError("weights", f"unknown value {weights!r}", f"use one of {', '.join(WEIGHTS)}")
    has_ema = any(k.startswith("ema.module.") for k in state_dict)
    if weights == "ema" and not has_ema:
        raise ConfigError("weights", "is ema but the checkpoint has no EMA weights", "use weights=model or auto")
    if weights == "auto":
        evaluate = OmegaConf.select(cfg, "method.ema.evaluate", default=True)
        return "ema" if has_ema and evaluate is not False else "model"
    return weights


def network_state(state_dict: Mapping[str, Tensor], weights: str) -> dict[str, Tensor]:
    """The classifier's own state dict (backbone + head) from the training module's, for ``ema`` or ``model``."""
    prefix = "ema.module." if weights == "ema" else "model."
    return {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}


def _head_outputs(net_state: Mapping[str, Tensor]) -> int | None:
    """The number of classes, read from the last 2-D weight of the head (its final linear layer)."""
    weights = [v for k, v in net_state.items() if k.startswith("head.") and v.ndim == 2]
    return int(weights[-1].shape[0]) if weights else None


def class_names(
    override: Sequence[str] | None,
    state: Mapping[str, Any],
    cfg: DictConfig,
    net_state: Mapping[str, Tensor],
) -> list[str]:
    """Class names: given, stored in the checkpoint, read from the training dataset, or ``"0".."n-1"``."""
    if override:
        return [str(c) for c in override]
    stored = state.get("sesemi_classes")
    if stored:
        return [str(c) for c in stored]
    n = _head_outputs(net_state)
    if OmegaConf.select(cfg, "data.train") is not None:
        try:
            train = instantiate(cfg, "data.train")
            classes = list(getattr(train, "classes", None) or [])
            if classes and (n is None or len(classes) == n):
                return [str(c) for c in classes]
        except Exception as err:  # noqa: BLE001  (the data may live elsewhere at inference time)
            log.warning("sesemi: could not read class names from the training data (%s)", err)
    if n is None:
        raise ConfigError(
            "classes",
            "the checkpoint's class names could not be recovered",
            "give them: classes=[name0,name1,...] in class-index order",
        )
    log.warning("sesemi: class names unknown, using 0..%d (set classes=[...] for names)", n - 1)
    return [str(i) for i in range(n)]
