"""The embedded default dataset: scikit-learn's 8x8 handwritten digits (1,797 images, shipped inside its wheel)."""

from __future__ import annotations

import os

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

SPLITS = ("train", "test")


class Digits(Dataset):
    """scikit-learn's digits as 8x8 grayscale PIL images, split 75/25 stratified with a fixed seed.

    The split is fixed (not tied to ``run.seed``) so every run evaluates on the same 450 test images.
    ``root`` is accepted for a uniform dataset signature and ignored: the data lives inside scikit-learn.
    """

    def __init__(self, root: str | os.PathLike | None = None, split: str = "train") -> None:
        if split not in SPLITS:
            raise ValueError(f"Digits split must be one of {SPLITS}, got {split!r}")
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        digits = load_digits()
        # Pixel values are 0..16; scale to the full uint8 range so image transforms see ordinary images.
        images = np.clip(digits.images * 16, 0, 255).astype(np.uint8)
        train_idx, test_idx = train_test_split(
            np.arange(len(images)), test_size=0.25, stratify=digits.target, random_state=0
        )
        idx = np.sort(train_idx if split == "train" else test_idx)
        self.images = images[idx]
        self.targets: list[int] = digits.target[idx].tolist()
        self.classes: list[str] = [str(d) for d in range(10)]

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        return Image.fromarray(self.images[index]), self.targets[index]
