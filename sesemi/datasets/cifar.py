"""CIFAR-10 and CIFAR-100 from the "python version" pickles, held in memory as (N, 32, 32, 3) uint8 RGB."""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from .errors import dataset_dir, require_files

# The only globals a CIFAR pickle needs (numpy arrays, bytes under protocol 2); anything else is refused, so a
# tampered file cannot run code. numpy 2 renamed numpy.core to numpy._core; the original files use the old name.
_SAFE_GLOBALS = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
    *((f"numpy.{core}.multiarray", name) for core in ("core", "_core") for name in ("_reconstruct", "scalar")),
    *((f"numpy.{core}.numeric", "_frombuffer") for core in ("core", "_core")),
}


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _SAFE_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR pickle")
        if module.startswith("numpy.core.") and hasattr(np, "_core"):
            module = "numpy._core." + module.removeprefix("numpy.core.")
        return super().find_class(module, name)


def load_pickle(path: Path) -> dict[str, Any]:
    """A CIFAR pickle as a dict with str keys (Python 2 files give str keys, Python 3 ones bytes keys).

    latin1 is the encoding that lets numpy rebuild arrays pickled by Python 2, as the official files are.
    """
    with open(path, "rb") as f:
        content = _SafeUnpickler(f, encoding="latin1").load()
    if not isinstance(content, dict):
        raise ValueError(f"{path} is not a CIFAR pickle: it holds a {type(content).__name__}, not a dict")
    return {_text(key): value for key, value in content.items()}


def _text(value: str | bytes) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value


class _CIFAR(Dataset):
    """The shared loader; subclasses name the folder, files per split, and the label and class-name keys."""

    name: ClassVar[str]
    folder: ClassVar[str]
    split_files: ClassVar[dict[str, tuple[str, ...]]]
    meta_file: ClassVar[str]
    url: ClassVar[str]

    def __init__(self, root: str | os.PathLike, split: str, labels_key: str, names_key: str) -> None:
        if split not in self.split_files:
            raise ValueError(f"{self.name} split must be one of {sorted(self.split_files)}, got {split!r}")
        self.split = split
        self.root = dataset_dir(root, self.folder, self.meta_file)
        archive = self.url.rsplit("/", 1)[-1]
        how_to_get = (
            f"Download {self.url} and extract it: "
            f"`tar xzf {archive} -C {self.root.parent}` creates {self.folder}/ there."
        )
        *batch_paths, meta_path = require_files(
            self.root, [*self.split_files[split], self.meta_file], f"{self.name} ({split} split)", how_to_get
        )
        images, labels = [], []
        for path in batch_paths:
            batch = load_pickle(path)
            data = np.asarray(batch["data"], dtype=np.uint8)
            if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(batch[labels_key]) != len(data):
                raise ValueError(f"{path} does not hold 3072-byte rows with one {labels_key!r} each")
            images.append(data)
            labels.extend(int(label) for label in batch[labels_key])
        # Rows are the red, green then blue planes of a 32x32 image; PIL wants height, width, channel.
        self.data: np.ndarray = np.ascontiguousarray(
            np.concatenate(images).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        )
        self.targets: list[int] = labels
        self.classes: list[str] = [_text(name) for name in load_pickle(meta_path)[names_key]]
        if labels and not 0 <= min(labels) <= max(labels) < len(self.classes):
            raise ValueError(f"{self.name} labels fall outside the {len(self.classes)} classes of {meta_path}")

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        return Image.fromarray(self.data[index]), self.targets[index]


class CIFAR10(_CIFAR):
    """CIFAR-10: 50000 train and 10000 test RGB 32x32 images in 10 classes.

    ``root`` is the folder holding ``cifar-10-batches-py/`` or that folder itself.
    """

    name = "CIFAR-10"
    folder = "cifar-10-batches-py"
    split_files: ClassVar[dict[str, tuple[str, ...]]] = {
        "train": tuple(f"data_batch_{i}" for i in range(1, 6)),
        "test": ("test_batch",),
    }
    meta_file = "batches.meta"
    url = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"

    def __init__(self, root: str | os.PathLike, split: str = "train") -> None:
        super().__init__(root, split, labels_key="labels", names_key="label_names")


class CIFAR100(_CIFAR):
    """CIFAR-100: 50000 train and 10000 test RGB 32x32 images in 100 fine or, with ``coarse``, 20 coarse classes.

    ``root`` is the folder holding ``cifar-100-python/`` or that folder itself.
    """

    name = "CIFAR-100"
    folder = "cifar-100-python"
    split_files: ClassVar[dict[str, tuple[str, ...]]] = {"train": ("train",), "test": ("test",)}
    meta_file = "meta"
    url = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"

    def __init__(self, root: str | os.PathLike, split: str = "train", coarse: bool = False) -> None:
        self.coarse = coarse
        kind = "coarse" if coarse else "fine"
        super().__init__(root, split, labels_key=f"{kind}_labels", names_key=f"{kind}_label_names")
