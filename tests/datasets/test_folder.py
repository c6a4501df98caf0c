"""ImageFolder (one sub-folder per class) and UnlabeledImages (a tree of images) on real PNG and JPEG files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sesemi.datasets.errors import DatasetNotFoundError
from sesemi.datasets.folder import ImageFolder, UnlabeledImages


def save(path: Path, array: np.ndarray) -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return array


def rgb(seed, size=(5, 7)):
    return np.random.default_rng(seed).integers(0, 256, size=(*size, 3), dtype=np.uint8)


@pytest.fixture
def tree(tmp_path):
    """root/cat/{a.png, sub/b.PNG}, root/dog/{c.jpg, gray.png, notes.txt}, plus hidden and empty entries."""
    arrays = {
        "cat/a.png": save(tmp_path / "cat/a.png", rgb(0)),
        "cat/sub/b.PNG": save(tmp_path / "cat/sub/b.PNG", rgb(1)),
        "dog/c.jpg": save(tmp_path / "dog/c.jpg", rgb(2, (8, 6))),
        "dog/gray.png": save(tmp_path / "dog/gray.png", np.arange(35, dtype=np.uint8).reshape(5, 7)),
    }
    save(tmp_path / ".hidden/x.png", rgb(3))
    save(tmp_path / "dog/.thumb.png", rgb(4))
    (tmp_path / "dog/notes.txt").write_text("not an image")
    (tmp_path / "empty").mkdir()
    return tmp_path, arrays


def test_image_folder(tree):
    root, arrays = tree
    dataset = ImageFolder(root)
    assert dataset.classes == ["cat", "dog", "empty"]
    assert dataset.paths == [str(root / p) for p in ["cat/a.png", "cat/sub/b.PNG", "dog/c.jpg", "dog/gray.png"]]
    assert dataset.targets == [0, 0, 1, 1] and len(dataset) == 4
    for i, relative in enumerate(["cat/a.png", "cat/sub/b.PNG"]):
        image, target = dataset[i]
        assert image.mode == "RGB" and type(target) is int and target == 0
        np.testing.assert_array_equal(np.asarray(image), arrays[relative])  # PNG is lossless
    jpeg, _ = dataset[2]
    assert jpeg.mode == "RGB" and jpeg.size == (6, 8)
    gray, _ = dataset[3]
    assert gray.mode == "RGB" and gray.size == (7, 5)
    np.testing.assert_array_equal(np.asarray(gray)[:, :, 1], arrays["dog/gray.png"])


def test_class_filter_keeps_the_given_order(tree):
    root, _ = tree
    dataset = ImageFolder(root, classes=["dog", "cat"])
    assert dataset.classes == ["dog", "cat"]
    assert dataset.targets == [0, 0, 1, 1]
    assert [Path(p).name for p in dataset.paths] == ["c.jpg", "gray.png", "a.png", "b.PNG"]


def test_missing_class_folders_are_named(tree):
    root, _ = tree
    with pytest.raises(DatasetNotFoundError) as info:
        ImageFolder(root, classes=["cat", "bird", "fish"])
    message = str(info.value)
    assert str(root) in message and "missing: bird, fish" in message and "run.data_root" in message


def test_grayscale_mode_and_extensions(tree):
    root, arrays = tree
    dataset = ImageFolder(root, classes=["dog"], extensions=["png"], mode="L")
    assert [Path(p).name for p in dataset.paths] == ["gray.png"]
    image, target = dataset[0]
    assert image.mode == "L" and target == 0
    np.testing.assert_array_equal(np.asarray(image), arrays["dog/gray.png"])


def test_unlabeled_images(tree):
    root, arrays = tree
    dataset = UnlabeledImages(root)
    assert dataset.paths == [str(root / p) for p in ["cat/a.png", "cat/sub/b.PNG", "dog/c.jpg", "dog/gray.png"]]
    assert dataset.targets == [-1] * 4 and dataset.classes == [] and len(dataset) == 4
    image, target = dataset[1]
    assert image.mode == "RGB" and target == -1
    np.testing.assert_array_equal(np.asarray(image), arrays["cat/sub/b.PNG"])
    gray, _ = UnlabeledImages(root / "dog", mode="L")[1]
    np.testing.assert_array_equal(np.asarray(gray), arrays["dog/gray.png"])


def test_missing_directory(tmp_path):
    for cls in (ImageFolder, UnlabeledImages):
        with pytest.raises(DatasetNotFoundError, match=f"{tmp_path / 'nope'} is not a directory"):
            cls(tmp_path / "nope")


def test_no_images(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a/readme.txt").write_text("x")
    with pytest.raises(DatasetNotFoundError, match=r"found no images in .*\.png"):
        UnlabeledImages(tmp_path)
    with pytest.raises(DatasetNotFoundError, match="class folders a"):
        ImageFolder(tmp_path)


def test_bad_arguments(tree):
    root, _ = tree
    with pytest.raises(ValueError, match="duplicates"):
        ImageFolder(root, classes=["cat", "cat"])
    with pytest.raises(ValueError, match="mode must be one of"):
        UnlabeledImages(root, mode="CMYK")
