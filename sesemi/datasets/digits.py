"""The embedded default dataset: scikit-learn's 8x8 handwritten digits (1,797 images, shipped inside its wheel)."""

from __future__ import annotations

import base64
import importlib.util
import os
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

SPLITS = ("train", "test")

# The test split, ``train_test_split(arange(1797), test_size=0.25, stratify=target, random_state=0)`` of
# scikit-learn, as a bitmask over the 1,797 images: fixed here so the split never depends on the installed
# scikit-learn and start-up needs no scikit-learn import (~0.3 s).
_TEST_MASK = (
    "AAAEiDUmEEAAFkEBk0IFABoACAECJAAoBiweCBEIlgoAkBkSBCD4oAKBEOBACAqaMEQVJElCwKAKIDCAQATYIUCLgCAASIXEABBACKCQAAVIaAAw"
    "EAACDsQJABIkhACDuAE8IaacCgIEAA9IQAgEpBhJAhJAYeUAgCRgTpQ3aoGSFgFUgABIQqCkGApQAKQLhWHmiBCASRJMgMAiBQaOAAEJ8gLBQTmI"
    "E8AJGQAAFI4BAIQQoOEAMygpAMFEyMBoCgECkwKSAwkipkAsJgQhCKhggZjIoBQShhICEoE4pBUA"
)


@lru_cache(maxsize=1)
def load_digits_arrays() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(uint8 images [1797, 8, 8], int targets, bool test mask), read once per process from the CSV inside
    scikit-learn's wheel without importing scikit-learn; ``sklearn.datasets.load_digits`` if the file moved."""
    spec = importlib.util.find_spec("sklearn")
    csv = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz" if spec else None
    if csv is not None and csv.is_file():
        data = np.loadtxt(csv, delimiter=",")
        pixels, target = data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(int)
    else:
        from sklearn.datasets import load_digits

        digits = load_digits()
        pixels, target = digits.images, digits.target
    # Pixel values are 0..16; scale to the full uint8 range so image transforms see ordinary images.
    images = np.clip(pixels * 16, 0, 255).astype(np.uint8)
    mask = np.unpackbits(np.frombuffer(base64.b64decode(_TEST_MASK), dtype=np.uint8), count=1797).astype(bool)
    if len(images) != len(mask):  # pragma: no cover - a different digits file: split it as before
        from sklearn.model_selection import train_test_split

        _, test_idx = train_test_split(np.arange(len(images)), test_size=0.25, stratify=target, random_state=0)
        mask = np.zeros(len(images), dtype=bool)
        mask[test_idx] = True
    return images, target, mask


class Digits(Dataset):
    """scikit-learn's digits as 8x8 grayscale PIL images, split 75/25 stratified with a fixed seed.

    The split is fixed (not tied to ``run.seed``) so every run evaluates on the same 450 test images.
    ``root`` is accepted for a uniform dataset signature and ignored: the data lives inside scikit-learn.
    """

    def __init__(self, root: str | os.PathLike | None = None, split: str = "train") -> None:
        if split not in SPLITS:
            raise ValueError(f"Digits split must be one of {SPLITS}, got {split!r}")
        images, target, test_mask = load_digits_arrays()
        idx = np.flatnonzero(~test_mask if split == "train" else test_mask)
        self.images = images[idx]
        self.targets: list[int] = target[idx].tolist()
        self.classes: list[str] = [str(d) for d in range(10)]

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        return Image.fromarray(self.images[index]), self.targets[index]
