"""Checks that turn bad input into one :class:`~sesemi.errors.ConfigError` before any training step.

:func:`check_config` looks at the composed config before anything is built; :func:`check_backbone` at a freshly
built backbone; :func:`check_before_training` at the built data module, training module and Trainer, and runs the
network on one real batch, so a shape or channel mismatch is reported with the key to change instead of failing
inside the first training step.
"""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from torch import Tensor, nn

from sesemi.checkpoints import Mismatch, load_checkpoint
from sesemi.errors import ConfigError, override

# The values pytorch_lightning.Trainer(precision=...) accepts, and sesemi's own (sesemi.builders.resolve_precision).
PRECISIONS = (
    "auto", "bf16-mixed-if-native", "64-true", "32-true", "16-true", "bf16-true", "16-mixed", "bf16-mixed",
    "transformer-engine", "transformer-engine-float16", "64", "32", "16", "bf16", 64, 32, 16,
)  # fmt: skip


def check_config(cfg: DictConfig) -> None:
    """Values that must be right before anything is built."""
    steps = cfg.trainer.get("max_steps")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ConfigError(
            "trainer.max_steps",
            f"must be a positive number of optimizer steps, got {steps!r}",
            "set e.g. trainer.max_steps=600 (the schedules and the run's end are counted in steps)",
        )
    if cfg.run.precision not in PRECISIONS:
        raise ConfigError(
            "run.precision",
            f"unknown precision {cfg.run.precision!r}",
            "use run.precision=auto, 32-true, 16-mixed, bf16-mixed or bf16-mixed-if-native",
        )


def check_backbone(backbone: nn.Module) -> nn.Module:
    """The backbone, once it is known to declare the width of the features it returns."""
    size = getattr(backbone, "out_features", None)
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ConfigError(
            "model.backbone",
            f"{type(backbone).__name__} has no positive int attribute 'out_features' (got {size!r}); the head is "
            "built with in_features=backbone.out_features",
            f"set self.out_features = <width of the feature vector forward() returns> in "
            f"{type(backbone).__name__}.__init__",
        )
    return backbone


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity mask, e.g. a SLURM allocation's)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def check_before_training(cfg: DictConfig, datamodule: Any, module: Any, trainer: Any) -> None:
    """Checks on the built objects: processes vs cores, batches per process, the test set, the optimizer, and the
    network on one real batch."""
    _check_cpu_processes(trainer)
    if cfg.run.mode == "fit":
        datamodule.check_batches(trainer.world_size, _processes(trainer))
    if cfg.run.mode == "test" and datamodule.test_set is None:
        raise ConfigError(
            "run.mode",
            "is test but this data config has no test set (data.test is null); the validation set's accuracy "
            "is not a test result",
            "evaluate the validation set with run.mode=validate, or give data.test a dataset",
        )
    with _rng_kept():  # the checks draw augmentations: training must see the same random numbers as without them
        _check_optimizer(module)
        datamodule.check_images()
        check_network(module.model, datamodule)


def check_eval_checkpoint(module: nn.Module, path: str | os.PathLike, key: str = "run.checkpoint") -> None:
    """``run.mode=validate|test``: the checkpoint at ``path`` loads, and its weights fit the built ``module`` exactly,
    as Lightning will load them (strictly), before the Trainer reads it: a foreign or damaged file is one error
    naming ``key`` instead of Lightning's state-dict traceback."""
    state = load_checkpoint(path, key)
    weights = state.get("state_dict") if isinstance(state, Mapping) else None
    if not isinstance(weights, Mapping):
        raise ConfigError(
            key,
            f"{path} is not a training checkpoint (it has no state_dict)",
            f"give {key} a checkpoint written by python -m sesemi.train (a run's checkpoints/best.ckpt)",
        )
    mismatch = Mismatch.of(module.state_dict(), weights)
    if not mismatch.fits:
        raise ConfigError(
            key,
            f"{path} does not fit this run's model: {mismatch.describe(len(weights))}",
            "evaluate it with the model it was trained with, which its own config rebuilds: python -m sesemi.predict "
            f"{override('checkpoint', str(path))} dataset=val",
        )


@contextlib.contextmanager
def _rng_kept() -> Iterator[None]:
    python, numpy = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        yield
    random.setstate(python)
    np.random.set_state(numpy)


def _processes(trainer: Any) -> str:
    return f"run.devices={trainer.num_devices} x run.num_nodes={trainer.num_nodes}"


def _check_cpu_processes(trainer: Any) -> None:
    from pytorch_lightning.accelerators import CPUAccelerator

    per_node = trainer.num_devices
    cores = usable_cores()
    if isinstance(trainer.accelerator, CPUAccelerator) and per_node > cores:
        raise ConfigError(
            "run.devices",
            f"asks for {per_node} CPU processes on this node but only {cores} CPU cores are usable here",
            f"set run.devices<={cores} (each CPU process needs a core of its own), or train on GPUs",
        )


def _check_optimizer(module: Any) -> None:
    try:
        configured = module.configure_optimizers()
    except ValueError as err:  # torch validates its arguments, e.g. "Invalid learning rate: -0.1"
        raise ConfigError("optimizer", str(err), "check the values under optimizer") from err
    optimizer = configured["optimizer"] if isinstance(configured, Mapping) else configured
    lrs = sorted({group["lr"] for group in optimizer.param_groups})
    if any(float(lr) <= 0 for lr in lrs):
        raise ConfigError(
            "optimizer.lr",
            f"is {lrs[0]}: no weight would change and the run would end at chance accuracy",
            "set a positive learning rate, e.g. optimizer.lr=0.03",
        )


def check_network(model: nn.Module, datamodule: Any) -> None:
    """Run ``model`` (backbone, then head) on one real batch of each stream's views, in eval mode and without
    gradients, and compare the backbone's output with its declared ``out_features``."""
    backbone = model.backbone
    declared = backbone.out_features
    was_training = model.training
    model.eval()
    try:
        for stream, views in datamodule.sample_batches(2).items():
            for view, images in views.items():
                where = f"a {stream} batch of {tuple(images.shape)} images ({view!r} view)"
                with torch.no_grad():
                    features = _run(backbone, images, where, "model.backbone")
                if features.ndim != 2 or features.shape[0] != images.shape[0]:
                    raise ConfigError(
                        "model.backbone",
                        f"returns features of shape {tuple(features.shape)} on {where}; a backbone returns one "
                        "feature vector per image, (batch, out_features)",
                        "flatten or pool the features at the end of the backbone's forward()",
                    )
                if features.shape[1] != declared:
                    raise ConfigError(
                        "model.backbone",
                        f"returns {features.shape[1]} features per image on {where} but its out_features "
                        f"says {declared}",
                        f"make out_features equal to the real width: {features.shape[1]} "
                        "(model.backbone.out_features if it is an argument, else in the backbone's __init__)",
                    )
                with torch.no_grad():
                    _run(model.head, features, f"the backbone's features of {where}", "model.head")
    finally:
        model.train(was_training)


def _run(network: nn.Module, x: Tensor, where: str, key: str) -> Tensor:
    try:
        return network(x)
    except RuntimeError as err:
        problem = f"fails on {where}: {str(err).splitlines()[0]}"
        if key == "model.backbone" and x.ndim == 4:
            channels = x.shape[1]
            fix = (
                f"the images have {channels} channel(s): give the backbone {channels} input channel(s) "
                f"(e.g. model.backbone.in_channels={channels}), or convert the images (the dataset's mode: "
                "data.train.mode=L and data.val.mode=L for 1 channel, RGB for 3) and check the augment group's "
                "crop size"
            )
        else:
            fix = f"check the arguments under {key}"
        raise ConfigError(key, problem, fix) from err
