"""SVHN (Street View House Numbers), cropped-digits format, from the official .mat files."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from .errors import require_files

_URL = "http://ufldl.stanford.edu/housenumbers/"


class SVHN(Dataset):
    """SVHN digits as RGB 32x32 images, classes '0'..'9' (the files' label 10 is the digit 0).

    ``root`` directly holds ``train_32x32.mat`` (73257 images), ``test_32x32.mat`` (26032) and/or
    ``extra_32x32.mat`` (531131, about 1.6 GB in memory); only the file of the chosen split is read.
    """

    splits = ("train", "test", "extra")

    def __init__(self, root: str | os.PathLike, split: str = "train") -> None:
        if split not in self.splits:
            raise ValueError(f"SVHN split must be one of {list(self.splits)}, got {split!r}")
        import scipy.io  # imported here: scipy is slow to import and only this loader needs it

        self.root = Path(root)
        self.split = split
        filename = f"{split}_32x32.mat"
        (path,) = require_files(
            self.root, [filename], f"SVHN ({split} split)", f"Download {_URL}{filename} into that directory."
        )
        mat = scipy.io.loadmat(path, variable_names=["X", "y"])
        images, labels = mat["X"], np.asarray(mat["y"]).reshape(-1).astype(np.int64)
        if images.ndim != 4 or images.shape[:3] != (32, 32, 3) or images.shape[3] != len(labels):
            raise ValueError(f"{path} does not hold X of shape (32, 32, 3, N) and y of N labels")
        if len(labels) and not 1 <= labels.min() <= labels.max() <= 10:
            raise ValueError(f"{path} has labels outside 1..10")
        # X is (height, width, channel, N); keep one contiguous (N, height, width, channel) block for PIL.
        self.data: np.ndarray = np.ascontiguousarray(np.moveaxis(images, 3, 0), dtype=np.uint8)
        del mat, images
        self.targets: list[int] = (labels % 10).tolist()
        self.classes: list[str] = [str(d) for d in range(10)]

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        return Image.fromarray(self.data[index]), self.targets[index]
