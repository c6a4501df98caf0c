"""Inference: class predictions of a trained checkpoint for a folder of images or a dataset, written to CSV.

Usage (as for training, every option is a ``key=value`` override of the app's config, ``configs/predict.yaml``)::

    python -m sesemi.predict checkpoint=runs/fmnist_fixmatch/20250101_120000 images=/path/to/images
    python -m sesemi.predict checkpoint=runs/.../checkpoints/best.ckpt images=photos tta=flip probabilities=true \\
        output=photos.csv
    python -m sesemi.predict checkpoint=runs/.../best.ckpt dataset=test          # the run's own test split
    python -m sesemi.predict checkpoint=runs/.../best.ckpt \\
        'dataset={_target_:sesemi.datasets.FashionMNIST,root:/data/fashion-mnist,split:test}'

Everything about the model comes from the checkpoint: the network is rebuilt from the resolved training config that
:class:`~sesemi.module.SemiSupervisedModule` stores under ``"sesemi_config"``, loaded with the EMA weights when the
run evaluated with them (``weights=auto``; ``weights=ema|model`` to choose), and fed through the run's own eval
transform (``augment.eval``). ``tta=flip`` (image and mirror image) and ``tta=multicrop`` (centre plus four corner
crops of the edge-padded image, shifted by 1/8 of the side) average softmax probabilities over the views.

The CSV (default ``<checkpoint's run dir>/predictions/<YYYYmmdd_HHMMSS>.csv``) has one row per image: ``id`` (the
path relative to ``images``, or the dataset index), ``label`` (class name), ``index`` (class index), ``score`` (its
probability), ``target`` (the true class index; datasets with labels only) and with ``probabilities=true`` one
``prob_<class>`` column per class.

Why a Hydra app rather than argparse: the options are few and flat, so argparse would do, but users drive training
with Hydra overrides and should not learn a second grammar for the step after it; overrides also let ``dataset=``
take a whole dataset node (``_target_`` and arguments) exactly as a data config writes it, and a workspace's
``configs/predict.yaml`` can change the defaults. Hydra's run dir and log file are switched off
(``hydra.run.dir=.``, ``hydra.output_subdir=null``, logging to stdout), so a prediction writes only its CSV.
Prediction is a plain ``torch.no_grad`` loop rather than ``Trainer.predict``: one device, no callbacks or loggers,
and TTA is a few lines around the forward pass.

The Python API is :class:`InferenceModel` (load once, ``predict_proba`` any dataset of ``(image, target)`` samples)
and :func:`predict_csv` (the CLI as a function).
"""

from __future__ import annotations

import csv
import logging
import os
import sys
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset

from sesemi import resolvers, rundir
from sesemi.errors import ConfigError

log = logging.getLogger("sesemi")

resolvers.register()
warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")

TTA_MODES = ("none", "flip", "multicrop")
WEIGHTS = ("auto", "ema", "model")
DATASET_SPLITS = ("test", "val", "train")


# ---------------------------------------------------------------------------------------------------------- checkpoints
def resolve_checkpoint(path: str | os.PathLike | None, key: str = "checkpoint") -> Path:
    """A checkpoint file, or a run dir standing for its ``checkpoints/best.ckpt`` (else ``last.ckpt``)."""
    return rundir.resolve_checkpoint(path, key, rundir.INFERENCE)


def checkpoint_run_dir(checkpoint: str | os.PathLike) -> Path:
    """The run dir a checkpoint belongs to (the one with ``status.json``), else the folder above ``checkpoints/``."""
    return rundir.run_dir_of_checkpoint(checkpoint)


def add_src_dir(src_dir: str | None) -> None:
    from sesemi.train import add_src_dir as _add

    _add(src_dir)


def _instantiate(cfg: DictConfig, key: str) -> Any:
    from sesemi.builders import instantiate_key

    return instantiate_key(cfg, key)


def _build_backbone(cfg: DictConfig) -> nn.Module:
    """The backbone as configured; pretrained-weight files that are gone are skipped (the checkpoint has weights)."""
    try:
        return _instantiate(cfg, "model.backbone")
    except ConfigError:
        node = cfg.model.backbone
        keys = [k for k in ("weights", "pretrained_file") if node.get(k) is not None]
        if not keys:
            raise
        stripped = OmegaConf.create(OmegaConf.to_container(cfg))
        for k in keys:
            stripped.model.backbone[k] = None
        log.warning(
            "sesemi: building the backbone without its pretrained %s (the checkpoint's weights replace them): %s",
            " / ".join(keys),
            ", ".join(str(node[k]) for k in keys),
        )
        return _instantiate(stripped, "model.backbone")


def _head_outputs(net_state: Mapping[str, Tensor]) -> int | None:
    """The number of classes, read from the last 2-D weight of the head (its final linear layer)."""
    weights = [v for k, v in net_state.items() if k.startswith("head.") and v.ndim == 2]
    return int(weights[-1].shape[0]) if weights else None


def _class_names(
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
            train = _instantiate(cfg, "data.train")
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


def _choose_weights(weights: str, cfg: DictConfig, state_dict: Mapping[str, Tensor]) -> str:
    if weights not in WEIGHTS:
        raise ConfigError("weights", f"unknown value {weights!r}", f"use one of {', '.join(WEIGHTS)}")
    has_ema = any(k.startswith("ema.module.") for k in state_dict)
    if weights == "ema" and not has_ema:
        raise ConfigError(
            "weights",
            "is ema but the checkpoint has no EMA weights",
            "use weights=model or auto",
        )
    if weights == "auto":
        evaluate = OmegaConf.select(cfg, "method.ema.evaluate", default=True)
        return "ema" if has_ema and evaluate is not False else "model"
    return weights


def _device(device: str | torch.device | None) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


# ------------------------------------------------------------------------------------------------------------ datasets
class _SizeMismatch(ValueError):
    """Images of a batch differ in size after the transform (one-argument, so it crosses DataLoader workers)."""


def _stack(batch: list[Tensor]) -> Tensor:
    shapes = {tuple(t.shape) for t in batch}
    if len(shapes) > 1:
        raise _SizeMismatch(f"image tensors of different shapes {sorted(shapes)[:4]}")
    return torch.stack(batch)


class TransformedImages(Dataset):
    """``dataset``'s images through ``resize`` (optional) and ``transform``; targets are dropped."""

    def __init__(
        self,
        dataset: Dataset,
        transform: Any,
        resize: int | Sequence[int] | None = None,
    ) -> None:
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


# --------------------------------------------------------------------------------------------------------------- model
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
        from sesemi.checkpoints import load_checkpoint
        from sesemi.module import Classifier

        path = resolve_checkpoint(checkpoint)
        state = load_checkpoint(path)
        stored = state.get("sesemi_config") if isinstance(state, Mapping) else None
        if not stored or "state_dict" not in state:
            raise ConfigError(
                "checkpoint",
                f"{path} is not a sesemi training checkpoint (no sesemi_config)",
                "use a checkpoint written by python -m sesemi.train",
            )
        cfg = OmegaConf.create(stored)
        add_src_dir(src_dir if src_dir is not None else OmegaConf.select(cfg, "run.src_dir"))
        state_dict = state["state_dict"]
        use = _choose_weights(weights, cfg, state_dict)
        prefix = "ema.module." if use == "ema" else "model."
        net_state = {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}
        names = _class_names(classes, state, cfg, net_state)
        backbone = _build_backbone(cfg)
        features = getattr(backbone, "out_features", None)
        if not isinstance(features, int):
            raise ConfigError(
                "model.backbone",
                f"{type(backbone).__name__} has no int attribute out_features",
                "a sesemi backbone must expose the size of its feature vector",
            )
        head = _instantiate(cfg, "model.head")(in_features=features, num_classes=len(names))
        model = Classifier(backbone, head)
        try:
            model.load_state_dict(net_state)
        except RuntimeError as err:
            raise ConfigError(
                "checkpoint",
                f"its {use} weights do not fit the model its config builds "
                f"({len(names)} classes): {str(err).splitlines()[0]} {str(err).splitlines()[-1]}",
                "check classes=[...] (one name per output) and that the checkpoint is intact",
            ) from err
        dev = _device(device)
        model.eval().requires_grad_(False).to(dev)
        transform = _instantiate(cfg, "augment.eval")
        log.info("sesemi: %s (%s weights, %d classes)", path, use, len(names))
        return cls(
            model=model,
            classes=names,
            transform=transform,
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

    @torch.no_grad()
    def predict_proba(
        self,
        dataset: Dataset,
        tta: str = "none",
        batch_size: int = 256,
        num_workers: int = 0,
        resize: int | Sequence[int] | None = None,
    ) -> Tensor:
        """Softmax probabilities ``(len(dataset), num_classes)`` for ``(image, target)`` samples, TTA-averaged."""
        tta_views(torch.zeros(1, 1, 2, 2), tta)  # validates tta before any work
        n = len(dataset)
        workers = max(0, min(int(num_workers), -(-n // batch_size) - 1))  # no worker start-up for a batch or two
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


# ----------------------------------------------------------------------------------------------------------------- CSV
@dataclass
class Predictions:
    ids: list[str | int]
    probs: Tensor
    classes: list[str]
    targets: list[int] | None = None
    path: Path | None = None

    @property
    def accuracy(self) -> float | None:
        if not self.targets or min(self.targets) < 0:
            return None
        target = torch.tensor(self.targets)
        return float((self.probs.argmax(1) == target).float().mean())


def write_predictions(path: str | os.PathLike, predictions: Predictions, probabilities: bool = False) -> Path:
    """One CSV row per image: id, label, index, score[, target][, prob_<class>...]."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = ["id", "label", "index", "score"]
    if predictions.targets is not None:
        header.append("target")
    if probabilities:
        header += [f"prob_{c}" for c in predictions.classes]
    score, index = predictions.probs.max(dim=1) if len(predictions.ids) else (torch.empty(0), torch.empty(0))
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for row, sample_id in enumerate(predictions.ids):
            i = int(index[row])
            line: list[Any] = [
                sample_id,
                predictions.classes[i],
                i,
                f"{float(score[row]):.6g}",
            ]
            if predictions.targets is not None:
                line.append(predictions.targets[row])
            if probabilities:
                line += [f"{float(p):.6g}" for p in predictions.probs[row]]
            writer.writerow(line)
    return path


def default_output(checkpoint: Path) -> Path:
    """``<run dir>/predictions/<YYYYmmdd_HHMMSS>.csv``, with ``_1``, ``_2``... when that name is taken."""
    folder = checkpoint_run_dir(checkpoint) / "predictions"
    folder.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d_%H%M%S")
    for n in range(10_000):
        candidate = folder / (f"{stamp}.csv" if n == 0 else f"{stamp}_{n}.csv")
        try:
            candidate.open("x").close()  # claim it, so two predictions started together never share a file
            return candidate
        except FileExistsError:
            continue
    raise RuntimeError(f"could not claim an output file in {folder}")


# -------------------------------------------------------------------------------------------------------------- inputs
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
    ids = [Path(p).relative_to(dataset.root).as_posix() for p in dataset.paths]
    return dataset, ids


def _targets_of(dataset: Dataset) -> list[int] | None:
    if isinstance(dataset, Subset):
        inner = _targets_of(dataset.dataset)
        return None if inner is None else [inner[i] for i in dataset.indices]
    targets = getattr(dataset, "targets", None)
    return None if targets is None else [int(t) for t in targets]


def dataset_input(spec: str | Mapping[str, Any], cfg: DictConfig) -> tuple[Dataset, list[int], list[int] | None]:
    """A dataset from ``test | val | train`` of the checkpoint's data config, or from a ``_target_`` node."""
    if isinstance(spec, Mapping):
        dataset = _instantiate(OmegaConf.create({"dataset": dict(spec)}), "dataset")
        ids = list(range(len(dataset)))
        return dataset, ids, _targets_of(dataset)
    if spec not in DATASET_SPLITS:
        raise ConfigError(
            "dataset",
            f"unknown value {spec!r}",
            "use dataset=test, val or train, or a node '{_target_:...,root:...}'",
        )
    data = cfg.get("data")
    if data is None:
        raise ConfigError(
            "dataset",
            "the checkpoint's config has no data section",
            "give dataset='{_target_:...}'",
        )
    if spec == "test" and data.get("test") is None:
        spec = "val"  # as the training run's test stage does
    if spec in ("train", "test") or data.get("val") is not None:
        dataset = _instantiate(cfg, f"data.{spec}")
        return dataset, list(range(len(dataset))), _targets_of(dataset)
    # Validation was held out from train: redo the run's seeded split; ids are indices into the train set.
    from sesemi.data.splits import split_indices

    train = _instantiate(cfg, "data.train")
    split = split_indices(
        _targets_of(train) or [],
        labels_per_class=data.get("labels_per_class"),
        label_fraction=data.get("label_fraction"),
        val_per_class=data.get("val_per_class"),
        val_fraction=data.get("val_fraction"),
        seed=data.get("split_seed", 0),
        classes=getattr(train, "classes", None),
    )
    subset = Subset(train, [int(i) for i in split.val])
    return subset, [int(i) for i in split.val], _targets_of(subset)


def _container(value: Any) -> Any:
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


# ---------------------------------------------------------------------------------------------------------------- main
def predict_csv(
    checkpoint: str | os.PathLike,
    images: str | os.PathLike | None = None,
    dataset: str | Mapping[str, Any] | None = None,
    output: str | os.PathLike | None = None,
    tta: str = "none",
    probabilities: bool = False,
    weights: str = "auto",
    classes: Sequence[str] | None = None,
    mode: str | None = None,
    resize: int | Sequence[int] | None = None,
    batch_size: int = 256,
    num_workers: int = 4,
    device: str | None = "auto",
    src_dir: str | None = "src",
) -> Predictions:
    """``python -m sesemi.predict`` as a function: predict ``images`` (a folder) or ``dataset`` and write the CSV."""
    if (images is None) == (dataset is None):
        raise ConfigError(
            "images",
            "give exactly one of images=<folder> and dataset=<test|val|train|node>",
            "e.g. images=/path/to/images",
        )
    if tta not in TTA_MODES:
        raise ConfigError("tta", f"unknown value {tta!r}", f"use one of {', '.join(TTA_MODES)}")
    inference = InferenceModel.from_checkpoint(
        checkpoint,
        weights=weights,
        classes=_container(classes),
        device=device,
        src_dir=src_dir,
    )
    targets = None
    if images is not None:
        data, ids = image_folder(images, mode or inference.image_mode)
    else:
        data, ids, targets = dataset_input(_container(dataset), inference.config)
        if targets is not None and (not targets or min(targets) < 0):
            targets = None
    probs = inference.predict_proba(
        data,
        tta=tta,
        batch_size=batch_size,
        num_workers=num_workers,
        resize=_container(resize),
    )
    result = Predictions(ids=list(ids), probs=probs, classes=inference.classes, targets=targets)
    out = Path(os.path.expanduser(str(output))) if output else default_output(inference.checkpoint)
    result.path = write_predictions(out, result, probabilities=probabilities)
    return result


@hydra.main(config_path="pkg://sesemi.configs", config_name="predict")
def main(cfg: DictConfig) -> None:
    options = OmegaConf.to_container(cfg, resolve=True)
    try:
        result = predict_csv(**options)
    except ConfigError as err:
        print(f"sesemi: error: {err}", file=sys.stderr)
        sys.exit(2)
    accuracy = result.accuracy
    print(
        f"sesemi: wrote {len(result.ids)} predictions to {result.path}"
        + (f" (accuracy {accuracy:.4f})" if accuracy is not None else "")
    )


if __name__ == "__main__":
    os.environ.setdefault("HYDRA_FULL_ERROR", "0")
    main()
