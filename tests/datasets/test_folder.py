"""ImageFolder (one sub-folder per class) and UnlabeledImages (a tree of images) on real PNG and JPEG files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sesemi.datasets.errors import CorruptImagesError, DatasetFilesError, DatasetNotFoundError
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
    (root / "empty").rmdir()
    dataset = ImageFolder(root)
    assert dataset.classes == ["cat", "dog"]
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


def test_an_empty_class_folder_is_named_unless_allowed(tree):
    root, _ = tree
    with pytest.raises(DatasetFilesError) as info:
        ImageFolder(root)
    assert "the class folder(s) 'empty' hold no images" in str(info.value)
    assert f"rmdir {root / 'empty'}" in info.value.fix_at("data.train")
    assert "++data.train.allow_empty_classes=true" in info.value.fix_at("data.train")
    kept = ImageFolder(root, allow_empty_classes=True)  # a pseudo-labeled folder keeps every class of its teacher
    assert kept.classes == ["cat", "dog", "empty"] and kept.targets == [0, 0, 1, 1]


def test_links_are_followed_and_each_real_folder_is_read_once(tmp_path):
    outside = tmp_path / "elsewhere"
    save(outside / "x.png", rgb(0))
    save(outside / "deeper" / "y.png", rgb(1))
    save(tmp_path / "data/cat/a.png", rgb(2))
    save(tmp_path / "data/dog/d.png", rgb(3))
    (tmp_path / "data/cat/more").symlink_to(outside)
    (tmp_path / "data/cat/again").symlink_to(outside)  # a second link to the same folder adds nothing
    (tmp_path / "data/cat/deeper").symlink_to(outside / "deeper")  # nor does a link into it
    (tmp_path / "data/dog/one.png").symlink_to(outside / "x.png")  # a linked file is an image of its own
    dataset = ImageFolder(tmp_path / "data")
    relative = [Path(p).relative_to(tmp_path / "data").as_posix() for p in dataset.paths]
    assert relative == ["cat/a.png", "cat/again/deeper/y.png", "cat/again/x.png", "dog/d.png", "dog/one.png"]
    assert dataset.targets == [0, 0, 0, 1, 1]


@pytest.mark.parametrize(
    "link, target",
    [("cat/loop", ".."), ("cat/self", "."), ("cat/sub/up", "../.."), ("cat/sub/root", "../../.."), ("all", ".")],
)
def test_a_link_to_a_folder_that_contains_it_is_refused_by_name(tree, link, target):
    root, _ = tree
    (root / "empty").rmdir()
    (root / link).symlink_to(target)
    for make in (lambda: ImageFolder(root), lambda: UnlabeledImages(root)):
        with pytest.raises(DatasetFilesError) as info:
            make()
        assert f"the symbolic link {root / link} -> {target} points to a folder that contains it" in str(info.value)
        assert f"rm {root / link}" in info.value.fix


def test_sixteen_bit_grayscale_is_scaled_not_clipped(tmp_path):
    wide = np.array([[0, 257, 1000, 32768], [40000, 50000, 65280, 65535]], dtype=np.uint16)
    (tmp_path / "a").mkdir()
    for name in ("png16.png", "tiff16.tif", "pgm16.pgm"):
        Image.fromarray(wide).save(tmp_path / "a" / name)
    save(tmp_path / "b" / "eight.png", np.full((2, 4), 200, np.uint8))
    assert Image.open(tmp_path / "a" / "png16.png").mode == "I;16"  # what Pillow's convert("L") clips at 255
    expected = np.round(wide / 257).astype(np.uint8)
    for mode in ("L", "RGB"):
        dataset = ImageFolder(tmp_path, mode=mode)
        assert [Path(p).name for p in dataset.paths] == ["pgm16.pgm", "png16.png", "tiff16.tif", "eight.png"]
        for i in range(3):
            pixels = np.asarray(dataset[i][0])
            np.testing.assert_array_equal(pixels if mode == "L" else pixels[..., 1], expected)
        np.testing.assert_array_equal(np.asarray(dataset[3][0].convert("L")), 200)


def test_images_of_unknown_range_are_named(tmp_path):
    save(tmp_path / "a" / "ok.png", np.zeros((4, 4), np.uint8))
    Image.fromarray(np.zeros((4, 4), np.int32)).save(tmp_path / "a" / "int32.tif")
    Image.fromarray(np.zeros((4, 4), np.float32)).save(tmp_path / "a" / "float.tif")
    with pytest.raises(CorruptImagesError) as info:
        UnlabeledImages(tmp_path)
    message = str(info.value)
    assert "2 of 3 images" in message
    assert "float.tif (ValueError: floating-point pixels (mode F) of unknown range" in message
    assert "int32.tif (ValueError: 32-bit integer pixels (mode I) of unknown range" in message


def test_verified_images_record_their_sizes(tree):
    root, _ = tree
    assert UnlabeledImages(root).sizes == [(7, 5), (7, 5), (6, 8), (7, 5)]
    assert UnlabeledImages(root, verify=False).sizes is None
