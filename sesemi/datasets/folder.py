"""Datasets of image files on disk: one sub-folder per class, or a tree of unlabeled images."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from PIL import Image
from torch.utils.data import Dataset

from .errors import RELATIVE_NOTE, DatasetNotFoundError

IMG_EXTENSIONS: tuple[str, ...] = (
    ".bmp", ".gif", ".jpeg", ".jpg", ".pgm", ".png", ".ppm", ".tif", ".tiff", ".webp",
)  # fmt: skip
MODES = ("RGB", "L")


def find_images(directory: Path, extensions: Iterable[str]) -> list[Path]:
    """Image files under ``directory`` (recursively, following links, skipping hidden entries), sorted by path.

    Extensions match case-insensitively, with or without the leading dot.
    """
    suffixes = tuple("." + e.lower().lstrip(".") for e in extensions)
    found = []
    for dirpath, dirnames, filenames in os.walk(directory, followlinks=True):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        found.extend(Path(dirpath, f) for f in filenames if not f.startswith(".") and f.lower().endswith(suffixes))
    return sorted(found, key=lambda p: p.relative_to(directory).parts)


class _ImageFiles(Dataset):
    """Images read from ``paths`` on access and converted to ``mode``."""

    def __init__(self, root: str | os.PathLike, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {list(MODES)}, got {mode!r}")
        self.root = Path(root)
        self.mode = mode
        self.paths: list[str] = []
        self.targets: list[int] = []
        self.classes: list[str] = []
        if not self.root.is_dir():
            raise DatasetNotFoundError(
                f"{type(self).__name__} not found: {self.root} is not a directory. {RELATIVE_NOTE}"
            )

    def _no_images_error(self, extensions: Sequence[str], where: str) -> DatasetNotFoundError:
        return DatasetNotFoundError(
            f"{type(self).__name__} found no images in {self.root}: looked {where} for files ending in "
            f"{', '.join(extensions)}. {RELATIVE_NOTE}"
        )

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        with Image.open(self.paths[index]) as image:
            return image.convert(self.mode), self.targets[index]


class ImageFolder(_ImageFiles):
    """Labeled images laid out as ``root/<class>/**/<image>``; the class index is the position in ``classes``.

    ``classes`` picks and orders the class sub-folders (say, to keep a test set's indices equal to the training
    set's); by default all non-hidden sub-folders are used, sorted by name. Images are converted to ``mode``.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        classes: Sequence[str] | None = None,
        extensions: Sequence[str] = IMG_EXTENSIONS,
        mode: str = "RGB",
    ) -> None:
        super().__init__(root, mode)
        if classes is None:
            classes = sorted(d.name for d in self.root.iterdir() if d.is_dir() and not d.name.startswith("."))
        classes = [str(c) for c in classes]
        if len(set(classes)) != len(classes):
            raise ValueError(f"classes has duplicates: {classes}")
        absent = [c for c in classes if not (self.root / c).is_dir()]
        if absent:
            raise DatasetNotFoundError.missing(
                "ImageFolder class folders",
                self.root,
                classes,
                "Each class needs a sub-folder of that name holding its images.",
                absent,
            )
        self.classes = classes
        for target, name in enumerate(classes):
            images = find_images(self.root / name, extensions)
            self.paths.extend(str(p) for p in images)
            self.targets.extend([target] * len(images))
        if not self.paths:
            raise self._no_images_error(extensions, f"in the class folders {', '.join(classes) or '(none)'}")


class UnlabeledImages(_ImageFiles):
    """Every image under ``root`` (recursively, sorted by path), each with target -1; ``classes`` is empty."""

    def __init__(self, root: str | os.PathLike, extensions: Sequence[str] = IMG_EXTENSIONS, mode: str = "RGB") -> None:
        super().__init__(root, mode)
        self.paths = [str(p) for p in find_images(self.root, extensions)]
        self.targets = [-1] * len(self.paths)
        if not self.paths:
            raise self._no_images_error(extensions, "recursively")
