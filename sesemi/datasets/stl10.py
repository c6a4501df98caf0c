"""STL-10 from the binary release (stl10_binary/), RGB 96x96."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from .errors import dataset_dir, require_files

_URL = "http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz"
_FOLDER = "stl10_binary"
_SIDE = 96
_IMAGE_BYTES = 3 * _SIDE * _SIDE


class STL10(Dataset):
    """STL-10: 5000 labeled train, 8000 test and 100000 unlabeled (target -1) images in 10 classes.

    ``root`` is the folder holding ``stl10_binary/`` or that folder itself. The train and test images are read
    into memory; the 2.7 GB unlabeled file is memory-mapped, and re-opened (not copied) when the dataset is
    pickled into a spawned DataLoader worker.
    """

    splits = ("train", "test", "unlabeled")

    def __init__(self, root: str | os.PathLike, split: str = "train") -> None:
        if split not in self.splits:
            raise ValueError(f"STL-10 split must be one of {list(self.splits)}, got {split!r}")
        self.root = dataset_dir(root, _FOLDER, "class_names.txt")
        self.split = split
        names = [f"{split}_X.bin"] + ([] if split == "unlabeled" else [f"{split}_y.bin"]) + ["class_names.txt"]
        how_to_get = (
            f"Download {_URL} and extract it: "
            f"`tar xzf stl10_binary.tar.gz -C {self.root.parent}` creates {_FOLDER}/ there."
        )
        paths = require_files(self.root, names, f"STL-10 ({split} split)", how_to_get)
        self._images_path = paths[0]
        self._images = self._open_images()
        self.classes: list[str] = [line.strip() for line in paths[-1].read_text().splitlines() if line.strip()]
        if split == "unlabeled":
            self.targets: list[int] = [-1] * len(self._images)
        else:
            labels = np.fromfile(paths[1], dtype=np.uint8).astype(np.int64)
            if len(labels) != len(self._images):
                raise ValueError(f"{paths[1]} has {len(labels)} labels for {len(self._images)} images")
            if len(labels) and not 1 <= labels.min() <= labels.max() <= len(self.classes):
                raise ValueError(f"{paths[1]} has labels outside 1..{len(self.classes)}")
            self.targets = (labels - 1).tolist()

    def _open_images(self) -> np.ndarray:
        """The images as (N, channel, x, y) uint8: the file stores each channel plane column by column."""
        size = self._images_path.stat().st_size
        if size % _IMAGE_BYTES:
            raise ValueError(f"{self._images_path} is {size} bytes, not a whole number of 3x96x96 images")
        shape = (size // _IMAGE_BYTES, 3, _SIDE, _SIDE)
        if self.split == "unlabeled":
            if size == 0:  # np.memmap refuses empty files
                return np.empty(shape, dtype=np.uint8)
            return np.memmap(self._images_path, dtype=np.uint8, mode="r", shape=shape)
        return np.fromfile(self._images_path, dtype=np.uint8).reshape(shape)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        if isinstance(self._images, np.memmap):
            state["_images"] = None  # pickling a memmap would copy the whole file
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if self._images is None:
            self._images = self._open_images()

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        # (channel, x, y) -> (y, x, channel), i.e. rows, columns, RGB.
        return Image.fromarray(np.ascontiguousarray(self._images[index].transpose(2, 1, 0))), self.targets[index]
