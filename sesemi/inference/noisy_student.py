"""Pseudo-labelling a folder, the data step of a Noisy-Student loop: a trained teacher labels unlabeled images and
the confidently predicted ones become an :class:`sesemi.datasets.ImageFolder` for the next student.

``python -m sesemi.pseudo_label`` (:mod:`sesemi.pseudo_label`) is the command around :func:`pseudo_label_folder`;
the loss head of the Pseudo-Label method (Lee, 2013) is :mod:`sesemi.losses.pseudo_label`, a different thing.
"""

from __future__ import annotations

import csv
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from sesemi.errors import ConfigError, hydra_value
from sesemi.inference.inputs import image_folder
from sesemi.inference.model import InferenceModel

LINKS = ("symlink", "hardlink", "copy")
CSV_NAME = "pseudo_labels.csv"
CLASSES_NAME = "classes.txt"


def class_folder_names(classes: Sequence[str]) -> list[str]:
    """A safe, unique, visible folder name per class (``/`` and ``\\`` become ``_``)."""
    names: list[str] = []
    for i, name in enumerate(classes):
        folder = str(name).replace("/", "_").replace("\\", "_").strip() or f"class_{i}"
        if folder.startswith("."):
            folder = "_" + folder  # ImageFolder skips hidden folders
        if folder in names:
            folder = f"{folder}_{i}"
        names.append(folder)
    return names


def _place(source: Path, destination: Path, link: str) -> None:
    destination.parent.mkdir(parents=True, exist_ok=True)
    if link == "symlink":
        destination.symlink_to(source.resolve())
    elif link == "hardlink":
        os.link(source.resolve(), destination)
    else:
        shutil.copy2(source, destination)


@dataclass
class PseudoLabels:
    output: Path
    classes: list[str]
    folders: list[str]
    kept: int
    total: int
    per_class: list[int]
    mode: str

    def train_overrides(self) -> list[str]:
        """The ``python -m sesemi.train`` overrides that make this folder the training set."""
        node = f"{{_target_:sesemi.datasets.ImageFolder,root:{hydra_value(str(self.output))},mode:{self.mode}"
        if sorted(self.folders) != self.folders:
            node += ",classes:[" + ",".join(hydra_value(f) for f in self.folders) + "]"
        if 0 in self.per_class:  # a class the teacher kept nothing of still has its folder, so the head stays
            node += ",allow_empty_classes:true"
        return ["~data.train", f"+data.train={node}}}", "data.labels_per_class=null"]


def pseudo_label_folder(
    checkpoint: str | os.PathLike,
    images: str | os.PathLike,
    output: str | os.PathLike,
    threshold: float = 0.9,
    max_per_class: int | None = None,
    link: str = "symlink",
    tta: str = "none",
    weights: str = "auto",
    classes: Sequence[str] | None = None,
    mode: str | None = None,
    resize: int | Sequence[int] | None = None,
    batch_size: int = 256,
    num_workers: int | None = None,
    device: str | None = "auto",
    src_dir: str | None = "src",
) -> PseudoLabels:
    """``python -m sesemi.pseudo_label`` as a function."""
    if images is None:
        raise ConfigError("images", "is not set", "give images=<folder of unlabeled images>")
    if output is None:
        raise ConfigError(
            "output",
            "is not set",
            "give output=<new dir for the pseudo-labeled dataset>",
        )
    if not 0.0 <= float(threshold) <= 1.0:
        raise ConfigError("threshold", f"must be in [0, 1], got {threshold}", "use e.g. threshold=0.9")
    if link not in LINKS:
        raise ConfigError("link", f"unknown value {link!r}", f"use one of {', '.join(LINKS)}")
    if max_per_class is not None and int(max_per_class) < 1:
        raise ConfigError(
            "max_per_class",
            f"must be >= 1, got {max_per_class}",
            "use a positive count or null",
        )
    out = Path(os.path.expanduser(str(output))).absolute()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(
            "output",
            f"{out} exists and is not an empty directory",
            "give a new output dir (pseudo-labels of different teachers must not mix)",
        )

    model = InferenceModel.from_checkpoint(checkpoint, weights=weights, classes=classes, device=device, src_dir=src_dir)
    mode = mode or model.image_mode
    dataset, ids = image_folder(images, mode)
    probs = model.predict_proba(dataset, tta=tta, batch_size=batch_size, num_workers=num_workers, resize=resize)
    score, index = probs.max(dim=1) if len(ids) else (torch.empty(0), torch.empty(0, dtype=torch.long))

    keep = torch.nonzero(score >= float(threshold)).flatten()
    if max_per_class is not None:
        chosen = []
        for c in range(len(model.classes)):
            members = keep[index[keep] == c]
            order = torch.argsort(score[members], descending=True, stable=True)
            chosen.append(members[order[: int(max_per_class)]])
        keep = torch.sort(torch.cat(chosen)).values if chosen else keep

    folders = class_folder_names(model.classes)
    out.mkdir(parents=True, exist_ok=True)
    for folder in folders:
        (out / folder).mkdir(exist_ok=True)
    per_class = [0] * len(folders)
    with open(out / CSV_NAME, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "label", "index", "score", "path"])
        for i in keep.tolist():
            c = int(index[i])
            relative = Path(folders[c]) / ids[i]
            _place(Path(dataset.paths[i]), out / relative, link)
            per_class[c] += 1
            writer.writerow(
                [
                    ids[i],
                    model.classes[c],
                    c,
                    f"{float(score[i]):.6g}",
                    relative.as_posix(),
                ]
            )
    (out / CLASSES_NAME).write_text("".join(f"{folder}\n" for folder in folders))
    return PseudoLabels(
        output=out,
        classes=model.classes,
        folders=folders,
        kept=len(keep),
        total=len(ids),
        per_class=per_class,
        mode=mode,
    )
