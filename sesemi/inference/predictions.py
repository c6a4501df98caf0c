"""Predictions and their CSV file: one row per sample, written to a file of its own."""

from __future__ import annotations

import csv
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from sesemi.inference.checkpoint import checkpoint_run_dir


@dataclass
class Predictions:
    ids: list[str | int]
    probs: Tensor
    classes: list[str]
    targets: list[int] | None = None
    path: Path | None = None

    @property
    def accuracy(self) -> float | None:
        if not self.targets:
            return None
        return float((self.probs.argmax(1) == torch.tensor(self.targets)).float().mean())


def write_predictions(path: str | os.PathLike, predictions: Predictions, probabilities: bool = False) -> Path:
    """One CSV row per sample: id, label, index, score[, target][, prob_<class>...]."""
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
            line: list[Any] = [sample_id, predictions.classes[i], i, f"{float(score[row]):.6g}"]
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
