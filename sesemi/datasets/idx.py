"""MNIST and Fashion-MNIST from their idx files (gzipped or plain), held in memory as uint8 arrays."""

from __future__ import annotations

import gzip
import math
import os
import struct
from pathlib import Path
from typing import ClassVar

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from .errors import DatasetNotFoundError

# The third byte of an idx file's magic number is the element type; the data is big-endian.
_IDX_DTYPES = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_GZIP_MAGIC = b"\x1f\x8b"


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """An idx file as a native-byte-order numpy array; gzip is detected from the content, not the name."""
    path = Path(path)
    with open(path, "rb") as f:
        gzipped = f.read(2) == _GZIP_MAGIC
    with gzip.open(path, "rb") if gzipped else open(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise ValueError(f"{path} is not an idx file (magic number {data[:4].hex()})")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{path} is truncated: its header announces {ndim} dimensions")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    size = math.prod(shape) * dtype.itemsize
    if len(data) - header != size:
        raise ValueError(f"{path} holds {len(data) - header} data bytes, its header {shape} announces {size}")
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return array.astype(dtype.newbyteorder("="))  # a writable copy in native order


class IdxDataset(Dataset):
    """A 28x28 grayscale ("L") idx dataset; subclasses give the name, class names and download hint.

    ``root`` is the directory that directly holds the four idx files, each either plain or ``.gz``.
    """

    name: ClassVar[str]
    class_names: ClassVar[tuple[str, ...]]
    how_to_get: ClassVar[str]  # formatted with {directory}
    split_files: ClassVar[dict[str, tuple[str, str]]] = {
        "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
        "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
    }

    def __init__(self, root: str | os.PathLike, split: str = "train") -> None:
        if split not in self.split_files:
            raise ValueError(f"{self.name} split must be one of {sorted(self.split_files)}, got {split!r}")
        self.root = Path(root)
        self.split = split
        images_path, labels_path = self._find_files()
        images, labels = read_idx(images_path), read_idx(labels_path)
        if images.ndim != 3 or images.dtype != np.uint8 or labels.ndim != 1 or len(images) != len(labels):
            raise ValueError(
                f"{images_path} and {labels_path} do not form an image dataset: "
                f"images {images.dtype}{images.shape}, labels {labels.dtype}{labels.shape}"
            )
        if len(labels) and not 0 <= labels.min() <= labels.max() < len(self.class_names):
            raise ValueError(f"{labels_path} has labels outside 0..{len(self.class_names) - 1}")
        self.data: np.ndarray = images
        self.targets: list[int] = labels.astype(np.int64).tolist()
        self.classes: list[str] = list(self.class_names)

    def _find_files(self) -> list[Path]:
        expected = [f"{name}[.gz]" for name in self.split_files[self.split]]
        found, absent = [], []
        for name in self.split_files[self.split]:
            candidates = [self.root / name, self.root / f"{name}.gz"]
            path = next((p for p in candidates if p.is_file()), None)
            found.append(path)
            if path is None:
                absent.append(f"{name}[.gz]")
        if absent:
            raise DatasetNotFoundError.missing(
                f"{self.name} ({self.split} split)",
                self.root,
                expected,
                self.how_to_get.format(directory=self.root),
                absent,
            )
        return found

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        return Image.fromarray(self.data[index]), self.targets[index]


class MNIST(IdxDataset):
    """The MNIST handwritten digits: 60000 train and 10000 test images, classes '0'..'9'."""

    name = "MNIST"
    class_names = tuple(str(d) for d in range(10))
    how_to_get = (
        "Download train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz and "
        "t10k-labels-idx1-ubyte.gz from http://yann.lecun.com/exdb/mnist/ (mirror: "
        "https://ossci-datasets.s3.amazonaws.com/mnist/) into {directory}; they may stay gzipped."
    )


class FashionMNIST(IdxDataset):
    """Zalando's Fashion-MNIST: MNIST's format and sizes, ten kinds of clothing."""

    name = "Fashion-MNIST"
    class_names = (
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    )
    how_to_get = (
        "`apt-get install dataset-fashion-mnist` installs it into /usr/share/datasets/fashion-mnist; then link it "
        "here: `ln -s /usr/share/datasets/fashion-mnist {directory}`. Or download the four .gz files from "
        "https://github.com/zalandoresearch/fashion-mnist (data/fashion) into {directory}."
    )
