"""Images of a folder against the transforms they go through, before training.

A folder dataset records each image's size when it decodes them (``sizes``, :mod:`sesemi.datasets.folder`). What a
view makes of an image depends on its size (and mode, one per dataset), so one image of each size, run through each
view, tells for every file whether training can use it: whether the view accepts it at all (a random crop larger
than a 1x1 image does not) and whether its output has the shape of everyone else's, which a batch needs. The error
names the files; without the check it is a torch traceback at the first batch that holds one of them.
"""

from __future__ import annotations

import shlex
from collections import Counter
from collections.abc import Sequence
from typing import Any

from torch.utils.data import Dataset

from sesemi.data.transforms import MultiView
from sesemi.errors import ConfigError

Size = tuple[int, int]
SHOWN = 5  # files named in an error; the rest are counted


def check_dataset_images(key: str, dataset: Dataset, views: Sequence[MultiView]) -> None:
    """Raise :class:`ConfigError` at ``key`` when one of ``views`` fails on an image of ``dataset`` or makes it a
    tensor of another shape than the others'. Datasets without ``sizes`` (in-memory arrays of one size, or a
    folder with ``verify=False``) are not checked here."""
    sizes: list[Size] | None = getattr(dataset, "sizes", None)
    if not sizes:
        return
    first: dict[Size, int] = {}
    for index, size in enumerate(sizes):
        first.setdefault(tuple(size), index)
    count = Counter(tuple(size) for size in sizes)
    for multiview in views:
        for name, view in _single_views(multiview):
            shapes = {size: _shape(key, dataset, index, name, view, sizes) for size, index in first.items()}
            by_shape: Counter[tuple[int, ...]] = Counter()
            for size, shape in shapes.items():
                by_shape[shape] += count[size]
            if len(by_shape) > 1:
                usual = by_shape.most_common(1)[0][0]
                odd = {size for size, shape in shapes.items() if shape != usual}
                raise _odd_shapes_error(key, dataset, sizes, odd, name, shapes, usual)


def _single_views(multiview: MultiView) -> list[tuple[str, MultiView]]:
    """Each view of ``multiview`` on its own (per-image and batched views alike), to name the one that fails."""
    every = {**multiview.views, **multiview.batch_views}
    return [(name, MultiView({name: transform})) for name, transform in every.items()]


def _shape(key: str, dataset: Dataset, index: int, name: str, view: MultiView, sizes: list[Size]) -> tuple[int, ...]:
    """The shape of one image's tensor after ``view`` (of the image at ``index``, standing for its size)."""
    image = dataset[index][0]
    try:
        return tuple(view.collate([view(image)])[name].shape[1:])
    except (ValueError, TypeError, RuntimeError, IndexError) as err:
        size = tuple(sizes[index])
        files = [i for i, s in enumerate(sizes) if tuple(s) == size]
        problem = (
            f"the {name!r} view fails on {_listed(dataset, files, len(sizes))} ({_pixels(size)}): "
            f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        )
        raise ConfigError(key, problem, _fix(dataset, files)) from err


def _odd_shapes_error(
    key: str,
    dataset: Dataset,
    sizes: list[Size],
    odd: set[Size],
    name: str,
    shapes: dict[Size, tuple[int, ...]],
    usual: tuple[int, ...],
) -> ConfigError:
    files = [i for i, s in enumerate(sizes) if tuple(s) in odd]
    made = ", ".join(f"{_pixels(size)} -> {shapes[size]}" for size in sorted(odd)[:SHOWN])
    return ConfigError(
        key,
        f"the {name!r} view makes tensors of another shape of {_listed(dataset, files, len(sizes))} ({made}) than "
        f"of the other images ({usual}); the images of a batch need one shape",
        _fix(dataset, files),
    )


def _listed(dataset: Any, files: list[int], total: int) -> str:
    named = ", ".join(str(dataset.paths[i]) for i in files[:SHOWN])
    more = f" and {len(files) - SHOWN} more" if len(files) > SHOWN else ""
    return f"{len(files)} of {total} images, {named}{more}"


def _pixels(size: Size) -> str:
    return f"{size[0]}x{size[1]} pixels"


def _fix(dataset: Any, files: list[int]) -> str:
    remove = f" (rm {' '.join(shlex.quote(str(dataset.paths[i])) for i in files)})" if len(files) <= SHOWN else ""
    return (
        f"remove those images from the dataset's folder{remove} or resize them to the size of the others, or start "
        "the augment pipelines with a resize (torchvision.transforms.v2.Resize) so every image fits"
    )
