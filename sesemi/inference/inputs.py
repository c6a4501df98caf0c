"""What inference predicts: a folder of images, or a dataset (a split of the checkpoint's data, or any node), with
one id per sample."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from torch.utils.data import Dataset, Subset

from sesemi.errors import ConfigError
from sesemi.inference.build import instantiate

DATASET_SPLITS = ("test", "val", "train")


def image_folder(images: str | os.PathLike, mode: str) -> tuple[Dataset, list[str]]:
    """Every image under ``images`` (via UnlabeledImages) and the ids: paths relative to ``images``."""
    from sesemi.datasets import UnlabeledImages

    if mode not in ("L", "RGB"):
        raise ConfigError("mode", f"unknown image mode {mode!r}", "use mode=L (grayscale) or mode=RGB")
    root = Path(os.path.expanduser(str(images)))
    try:
        dataset = UnlabeledImages(root, mode=mode)
    except FileNotFoundError as err:
        raise ConfigError("images", str(err), "give images=<a folder holding image files>") from err
    except ValueError as err:  # corrupt files, a symlink loop: the dataset's message names them, with the fix
        fix_at = getattr(err, "fix_at", None)
        raise ConfigError("images", str(err), fix_at("images") if fix_at else getattr(err, "fix", "")) from err
    return dataset, sample_ids(dataset)


def _unwrap(dataset: Dataset) -> tuple[Dataset, list[int]]:
    """The dataset under any ``Subset`` layers, and the indices into it of ``dataset``'s samples."""
    indices = list(range(len(dataset)))
    while isinstance(dataset, Subset):
        indices = [int(dataset.indices[i]) for i in indices]
        dataset = dataset.dataset
    return dataset, indices


def sample_ids(dataset: Dataset) -> list[str | int]:
    """One id per sample: its file path (relative to the dataset's ``root`` when under it) for datasets read from
    files (a ``paths`` list, as sesemi's ImageFolder and UnlabeledImages have), else its index in the dataset."""
    base, indices = _unwrap(dataset)
    paths = getattr(base, "paths", None)
    if paths is None or len(paths) != len(base):
        return indices
    root = getattr(base, "root", None)
    root = Path(root).absolute() if root is not None else None

    def name(path: str | os.PathLike) -> str:
        p = Path(path).absolute()
        return p.relative_to(root).as_posix() if root is not None and p.is_relative_to(root) else str(path)

    return [name(paths[i]) for i in indices]


def _targets(dataset: Dataset) -> list[int] | None:
    base, indices = _unwrap(dataset)
    targets = getattr(base, "targets", None)
    if targets is None:
        return None
    labels = [int(targets[i]) for i in indices]
    return labels if labels and min(labels) >= 0 else None


def dataset_input(spec: str | Mapping[str, Any], cfg: DictConfig) -> tuple[Dataset, list[str | int], list[int] | None]:
    """``(dataset, ids, targets)``: ``test | val | train`` as the checkpoint's data module splits them, or the
    dataset a ``_target_`` node builds. ``targets`` is None when the samples have no labels."""
    if isinstance(spec, Mapping):
        dataset = instantiate(OmegaConf.create({"dataset": dict(spec)}), "dataset")
    elif spec in DATASET_SPLITS:
        dataset = _split_of_the_run(spec, cfg)
    else:
        raise ConfigError(
            "dataset",
            f"unknown value {spec!r}",
            "use dataset=test, val or train, or a node '{_target_:...,root:...}'",
        )
    return dataset, sample_ids(dataset), _targets(dataset)


def _split_of_the_run(split: str, cfg: DictConfig) -> Dataset:
    """The run's own ``split``, from its data module: the held-out validation set is the same seeded split."""
    from sesemi.builders import build_datamodule

    if cfg.get("data") is None:
        raise ConfigError("dataset", "the checkpoint's config has no data section", "give dataset='{_target_:...}'")
    data = build_datamodule(cfg)
    if split == "train":
        return data.train_set
    if split == "test":
        if data.test_set is None:
            raise ConfigError(
                "dataset",
                "is test but the checkpoint's run has no test set (its data.test is null); the validation set's "
                "predictions are not test predictions",
                "predict the validation set with dataset=val, or give the test images: images=<folder> or "
                "dataset='{_target_:...}'",
            )
        return data.test_set
    return data.val_set if data.val_set is not None else Subset(data.train_set, list(data.split.val))
