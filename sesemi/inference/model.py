"""A trained classifier ready for prediction, and test-time augmentation."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from sesemi.errors import ConfigError
from sesemi.inference.build import build_classifier, instantiate, trained_with_flips
from sesemi.inference.checkpoint import choose_weights, class_names, network_state, read_checkpoint, resolve_checkpoint
from sesemi.workspace import add_src_dir

log = logging.getLogger("sesemi")

TTA_MODES = ("none", "flip", "multicrop")


def available_cores() -> int:
    """CPU cores this process may use (its affinity, as the DataLoader's worker warning counts them)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def default_workers(num_workers: int | None) -> int:
    """``num_workers``, or when unset the cores this process may use, at most 8."""
    return min(8, available_cores()) if num_workers is None else int(num_workers)


def tta_views(x: Tensor, tta: str) -> list[Tensor]:
    """The test-time views of a batch ``(N, C, H, W)``: itself, plus its mirror (flip) or four shifted crops."""
    if tta == "none":
        return [x]
    if tta == "flip":
        return [x, torch.flip(x, dims=[-1])]
    if tta == "multicrop":
        h, w = x.shape[-2:]
        ph, pw = max(1, round(h / 8)), max(1, round(w / 8))
        padded = nn.functional.pad(x, (pw, pw, ph, ph), mode="replicate")
        offsets = [(ph, pw), (0, 0), (0, 2 * pw), (2 * ph, 0), (2 * ph, 2 * pw)]
        return [padded[..., i : i + h, j : j + w] for i, j in offsets]
    raise ConfigError("tta", f"unknown value {tta!r}", f"use one of {', '.join(TTA_MODES)}")


class _SizeMismatch(ValueError):
    """Images of a batch differ in size after the transform (one-argument, so it crosses DataLoader workers)."""


def _stack(batch: list[Tensor]) -> Tensor:
    shapes = {tuple(t.shape) for t in batch}
    if len(shapes) > 1:
        raise _SizeMismatch(f"image tensors of different shapes {sorted(shapes)[:4]}")
    return torch.stack(batch)


class TransformedImages(Dataset):
    """``dataset``'s images through ``resize`` (optional) and ``transform``; targets are dropped."""

    def __init__(self, dataset: Dataset, transform: Any, resize: int | Sequence[int] | None = None) -> None:
        from torchvision.transforms import v2

        self.dataset = dataset
        self.transform = transform
        size = [int(resize)] * 2 if isinstance(resize, int) else [int(s) for s in resize] if resize else None
        self.resize = v2.Resize(size, antialias=True) if size else None

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Tensor:
        image = self.dataset[index][0]
        if self.resize is not None:
            image = self.resize(image)
        return self.transform(image)


def _device(device: str | torch.device | None) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@dataclass
class InferenceModel:
    """A trained classifier ready for prediction: network (eval mode, on ``device``), class names, eval transform."""

    model: nn.Module
    classes: list[str]
    transform: Any
    config: DictConfig
    checkpoint: Path
    weights: str
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @classmethod
    def from_checkpoint(
        cls,
        checkpoint: str | os.PathLike,
        weights: str = "auto",
        classes: Sequence[str] | None = None,
        device: str | torch.device | None = "auto",
        src_dir: str | None = "src",
    ) -> InferenceModel:
        """Rebuild the network from the checkpoint's ``sesemi_config`` and load its (EMA) weights."""
        path = resolve_checkpoint(checkpoint)
        state = read_checkpoint(path)
        cfg = OmegaConf.create(state["sesemi_config"])
        add_src_dir(src_dir if src_dir is not None else OmegaConf.select(cfg, "run.src_dir"))
        use = choose_weights(weights, cfg, state["state_dict"])
        net_state = network_state(state["state_dict"], use)
        names = class_names(classes, state, cfg, net_state)
        dev = _device(device)
        model = build_classifier(cfg, net_state, len(names), use).to(dev)
        log.info("sesemi: %s (%s weights, %d classes)", path, use, len(names))
        return cls(
            model=model,
            classes=names,
            transform=instantiate(cfg, "augment.eval"),
            config=cfg,
            checkpoint=path,
            weights=use,
            device=dev,
        )

    @property
    def image_mode(self) -> str:
        """``"L"`` for a 1-channel model, else ``"RGB"``: how images from files should be converted."""
        channels = OmegaConf.select(self.config, "model.backbone.in_channels", default=3)
        return "L" if channels == 1 else "RGB"

    def check_tta(self, tta: str) -> None:
        """Raise on an unknown ``tta``; warn when ``flip`` shows the model mirror images it never trained on."""
        tta_views(torch.zeros(1, 1, 2, 2), tta)
        if tta == "flip" and not trained_with_flips(self.config):
            log.warning(
                "sesemi: warning: tta=flip averages each image with its mirror image, but this model was trained "
                "without horizontal flips (its augmentations have no RandomHorizontalFlip), so mirrored images "
                "are new to it and usually lower the accuracy. Use tta=none or tta=multicrop for it."
            )

    @torch.no_grad()
    def predict_proba(
        self,
        dataset: Dataset,
        tta: str = "none",
        batch_size: int = 256,
        num_workers: int | None = None,
        resize: int | Sequence[int] | None = None,
    ) -> Tensor:
        """Softmax probabilities ``(len(dataset), num_classes)`` for ``(image, target)`` samples, TTA-averaged.

        ``num_workers`` DataLoader worker processes (default: this machine's cores, at most 8); none for a batch or
        two, where starting them costs more than they save.
        """
        self.check_tta(tta)
        n = len(dataset)
        workers = max(0, min(default_workers(num_workers), -(-n // batch_size) - 1))
        loader = DataLoader(
            TransformedImages(dataset, self.transform, resize),
            batch_size=batch_size,
            shuffle=False,
            num_workers=workers,
            collate_fn=_stack,
            pin_memory=self.device.type == "cuda",
        )
        out = []
        try:
            for x in loader:
                x = x.to(self.device, non_blocking=True)
                views = tta_views(x, tta)
                probs = sum(torch.softmax(self.model(v).float(), dim=-1) for v in views) / len(views)
                out.append(probs.cpu())
        except _SizeMismatch as err:
            raise ConfigError(
                "resize",
                f"the images differ in size after the checkpoint's eval transform ({err})",
                "resize them all to the training size first, e.g. resize=32 (or resize=[height,width])",
            ) from None
        return torch.cat(out) if out else torch.empty(0, len(self.classes))
