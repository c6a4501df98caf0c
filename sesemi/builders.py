"""Config -> objects: the data module, the training module and the Trainer, each from its config group."""

from __future__ import annotations

import logging
import re
from typing import Any

import torch
from hydra.errors import InstantiationException
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import ProgressBar

from sesemi.callbacks.objective import ObjectiveCheck
from sesemi.checkpoint_io import AtomicCheckpointIO
from sesemi.checks import check_backbone
from sesemi.compat.hydra import instantiate
from sesemi.compat.torch import cpu_has_native_bf16
from sesemi.data.datamodule import SemiSupervisedDataModule
from sesemi.errors import ConfigError
from sesemi.module import SemiSupervisedModule
from sesemi.runtime import Runtime

log = logging.getLogger("sesemi")


def _full_key(err: BaseException, default: str) -> str:
    """The config key Hydra attached to an instantiation error (as a note, or in the message)."""
    for text in (*getattr(err, "__notes__", ()), str(err)):
        match = re.search(r"full_key: (\S+)", text)
        if match:
            return match.group(1)
    return default


def instantiate_key(cfg: DictConfig, key: str, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate`` of the node at ``key``, with failures a user can fix raised as ConfigError.

    Any ``_target_`` is allowed: injecting the user's own classes through their configs is sesemi's plug-in API,
    and those configs are the user's own code, so Hydra's execution whitelist would only get in the way.
    """
    node = OmegaConf.select(cfg, key)
    if node is None:
        return None
    try:
        return instantiate(node, **kwargs)
    except ConfigError:
        raise
    except InstantiationException as err:  # the _target_ could not be located or imported
        full_key = _full_key(err, key)
        problem = str(err.__cause__ or err)  # keeps the cause, e.g. "No module named 'nopkg'"
        raise ConfigError(
            full_key,
            problem.replace(", set env var HYDRA_FULL_ERROR=1 to see chained stack trace", ""),
            f"check {full_key}._target_; your own code goes in a package under run.src_dir (./src) "
            "or in an installed package",
        ) from err
    except FileNotFoundError as err:
        raise ConfigError(_full_key(err, key), str(err), "put the files there or change run.data_root") from err
    except (TypeError, ValueError) as err:
        full_key = _full_key(err, key)
        fix_at = getattr(err, "fix_at", None)  # a dataset's fix that names its key (DatasetFilesError)
        fix = fix_at(full_key) if fix_at else getattr(err, "fix", None) or f"check the arguments under {full_key}"
        raise ConfigError(full_key, f"{type(err).__name__}: {err}", fix) from err


def build_datamodule(cfg: DictConfig) -> SemiSupervisedDataModule:
    return instantiate_key(cfg, "data")


def build_module(cfg: DictConfig, num_classes: int, class_names: list[str] | None = None) -> SemiSupervisedModule:
    heads = cfg.method.loss_heads
    for name, node in heads.items():
        if node is not None and "_target_" not in node:
            raise ConfigError(
                f"method.loss_heads.{name}",
                f"has no _target_ (only {sorted(node)}): a setting for a head the chosen method does not have",
                f"drop it (method.loss_heads.{name}=null) or give the head a _target_",
            )
    ema = cfg.method.get("ema") or {}
    module = SemiSupervisedModule(
        backbone=check_backbone(instantiate_key(cfg, "model.backbone")),
        head=instantiate_key(cfg, "model.head"),
        loss_heads={name: instantiate_key(cfg, f"method.loss_heads.{name}") for name in heads},
        optimizer=instantiate_key(cfg, "optimizer"),
        lr_scheduler=instantiate_key(cfg, "lr_scheduler"),
        num_classes=num_classes,
        class_names=class_names,
        ema_decay=ema.get("decay"),
        ema_evaluate=ema.get("evaluate", True),
        config=OmegaConf.to_container(cfg, resolve=True),
    )
    if cfg.run.get("channels_last"):
        # Conv weights in NHWC: oneDNN (CPU) and tensor-core GPUs convolve faster, and activations follow the
        # weights' layout, so the input batches need no conversion. Moving and checkpoint loads keep the layout.
        module.to(memory_format=torch.channels_last)
    return module


def _check_devices(accelerator: str, devices: int | str) -> None:
    if devices in ("auto", -1):
        return
    if not isinstance(devices, int) or devices < 1:
        raise ConfigError("run.devices", f"must be a positive number of devices, got {devices!r}", "use run.devices=1")
    if accelerator in ("gpu", "cuda"):
        available = torch.cuda.device_count()
        if available == 0:
            raise ConfigError(
                "run.accelerator", f"is {accelerator!r} but no GPU is visible", "use run.accelerator=auto or cpu"
            )
        if devices > available:
            raise ConfigError(
                "run.devices",
                f"asks for {devices} GPUs but this machine has {available}",
                f"set run.devices<={available}, or run.num_nodes>1 on a cluster",
            )


def resolve_accelerator(accelerator: str) -> str:
    if accelerator == "auto":
        return "gpu" if torch.cuda.is_available() else "cpu"
    return accelerator


def native_bf16(accelerator: str) -> bool:
    """Whether the device computes bf16 in hardware: a GPU with bf16, a CPU with AVX512-BF16 or AMX."""
    if accelerator in ("gpu", "cuda"):
        return torch.cuda.is_bf16_supported()
    return accelerator == "cpu" and cpu_has_native_bf16()


def resolve_precision(precision: str | int, accelerator: str) -> str | int:
    """``auto``: bf16 mixed precision on GPUs that have it, fp16 mixed on older GPUs, full precision on CPU.
    ``bf16-mixed-if-native``: bf16 mixed precision where the device computes bf16 in hardware, else full precision
    (the CPU recipes: bf16 speeds up a CPU that has it and slows one without several times)."""
    if precision == "auto":
        if accelerator in ("gpu", "cuda"):
            return "bf16-mixed" if native_bf16(accelerator) else "16-mixed"
        return "32-true"
    if precision == "bf16-mixed-if-native":
        return "bf16-mixed" if native_bf16(accelerator) else "32-true"
    if str(precision).startswith("bf16") and accelerator == "cpu" and not native_bf16(accelerator):
        log.warning(
            "sesemi: run.precision=%s on a CPU without bf16 hardware (AVX512-BF16 or AMX): PyTorch emulates it, "
            "several times slower than fp32; set run.precision=32-true or bf16-mixed-if-native",
            precision,
        )
    return precision


def _is_tensorboard(node: Any) -> bool:
    from hydra.utils import get_class
    from pytorch_lightning.loggers import TensorBoardLogger

    try:
        return issubclass(get_class(str(node.get("_target_"))), TensorBoardLogger)
    except Exception:  # noqa: BLE001 - not a class: instantiate_key names the key and the fix
        return False


def build_loggers(cfg: DictConfig, purge_step: int | None = None) -> list[Any]:
    """The loggers of ``cfg.logger``. ``purge_step``: the step this attempt's training starts at; a TensorBoard
    logger marks it in its event file, and TensorBoard hides what earlier attempts of the run dir logged at and after
    it (``SummaryWriter(purge_step=...)``), so each step shows once after a run was killed and continued."""
    loggers = []
    for key, node in (cfg.get("logger") or {}).items():
        if node is None:
            continue
        extra = {"purge_step": purge_step} if purge_step is not None and _is_tensorboard(node) else {}
        loggers.append(instantiate_key(cfg, f"logger.{key}", **extra))
    return loggers


def build_trainer(cfg: DictConfig, runtime: Runtime | None = None, purge_step: int | None = None, **overrides: Any):
    """The Trainer of ``cfg``, on the strategy, plugins and callbacks the environment decided (``runtime``);
    ``purge_step``: where its training starts (:func:`build_loggers`)."""
    runtime = runtime or Runtime()
    run = cfg.run
    accelerator = resolve_accelerator(run.accelerator)
    _check_devices(accelerator, run.devices)
    callbacks = [instantiate_key(cfg, f"callbacks.{k}") for k in (cfg.get("callbacks") or {})]
    loggers = build_loggers(cfg, purge_step)
    if accelerator in ("gpu", "cuda"):
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    trainer_cfg = cfg.trainer
    interval = trainer_cfg.get("val_check_interval")
    if isinstance(interval, int) and trainer_cfg.get("max_steps", -1) > 0:
        # Validate at least once, at the end, even when a short run has fewer steps than the interval.
        overrides.setdefault("val_check_interval", min(interval, trainer_cfg.max_steps))
    overrides.setdefault("plugins", [AtomicCheckpointIO(), *runtime.plugins])
    if "enable_progress_bar" not in trainer_cfg and not any(isinstance(c, ProgressBar) for c in callbacks):
        overrides["enable_progress_bar"] = False  # callbacks.progress_bar=null means no bar, not Lightning's own
    return instantiate_key(
        cfg,
        "trainer",
        accelerator=accelerator,
        devices=run.devices,
        num_nodes=run.num_nodes,
        strategy=runtime.strategy,
        precision=resolve_precision(run.precision, accelerator),
        # The runtime's callbacks (signals, a sweep's trial callback with its own hint) before the generic check.
        callbacks=[*(c for c in callbacks if c is not None), *runtime.callbacks, ObjectiveCheck(run.objective)],
        logger=[lg for lg in loggers if lg is not None] or False,
        **overrides,
    )
