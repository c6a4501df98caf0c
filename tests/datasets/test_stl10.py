"""STL-10 read from binaries in the official layout: per image, three 96x96 channel planes stored column by column."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from PIL import Image

from sesemi.datasets.errors import DatasetNotFoundError
from sesemi.datasets.stl10 import STL10

CLASSES = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]


def write_images(path, images):
    """Each image as its R, G and B planes in column-major (Fortran) order, as the STL-10 binaries store them."""
    path.write_bytes(b"".join(image[:, :, c].tobytes(order="F") for image in images for c in range(3)))


def make_stl10(root, seed=0):
    folder = root / "stl10_binary"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    (folder / "class_names.txt").write_text("\n".join(CLASSES) + "\n")
    made = {}
    for split, n in [("train", 4), ("test", 3), ("unlabeled", 5)]:
        images = rng.integers(0, 256, size=(n, 96, 96, 3), dtype=np.uint8)
        write_images(folder / f"{split}_X.bin", images)
        labels = rng.integers(1, 11, size=n).astype(np.uint8)
        if split != "unlabeled":
            (folder / f"{split}_y.bin").write_bytes(labels.tobytes())
        made[split] = images, labels
    return folder, made


def check(dataset, images, targets):
    assert len(dataset) == len(images) and dataset.targets == targets
    assert dataset.classes == CLASSES
    for i in range(len(dataset)):
        image, target = dataset[i]
        assert isinstance(image, Image.Image) and image.mode == "RGB" and image.size == (96, 96)
        np.testing.assert_array_equal(np.asarray(image), images[i])
        assert type(target) is int and target == targets[i]


@pytest.mark.parametrize("split", ["train", "test"])
def test_labeled_splits(tmp_path, split):
    folder, made = make_stl10(tmp_path)
    images, labels = made[split]
    expected = [int(label) - 1 for label in labels]
    check(STL10(tmp_path, split), images, expected)
    check(STL10(folder, split), images, expected)  # root may be stl10_binary itself


def test_unlabeled_split_is_memory_mapped_and_pickles_small(tmp_path):
    _, made = make_stl10(tmp_path)
    images, _ = made["unlabeled"]
    dataset = STL10(tmp_path, "unlabeled")
    check(dataset, images, [-1] * 5)
    assert isinstance(dataset._images, np.memmap)
    blob = pickle.dumps(dataset)
    assert len(blob) < images.nbytes / 10  # the mapped images are not copied into the pickle
    check(pickle.loads(blob), images, [-1] * 5)


def test_default_split_is_train(tmp_path):
    make_stl10(tmp_path)
    assert len(STL10(tmp_path)) == 4


def test_missing_files(tmp_path):
    with pytest.raises(DatasetNotFoundError) as info:
        STL10(tmp_path / "stl10", "unlabeled")
    message = str(info.value)
    assert str(tmp_path / "stl10" / "stl10_binary") in message
    assert "unlabeled_X.bin, class_names.txt" in message and "unlabeled_y.bin" not in message
    assert "http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz" in message and "run.data_root" in message


def test_missing_labels_named(tmp_path):
    folder, _ = make_stl10(tmp_path)
    (folder / "test_y.bin").unlink()
    with pytest.raises(DatasetNotFoundError, match=r"missing: test_y\.bin\)"):
        STL10(tmp_path, "test")


def test_bad_sizes(tmp_path):
    folder, _ = make_stl10(tmp_path)
    (folder / "train_y.bin").write_bytes(bytes([1, 2]))
    with pytest.raises(ValueError, match="2 labels for 4 images"):
        STL10(tmp_path, "train")
    (folder / "test_X.bin").write_bytes(b"\x00" * 100)
    with pytest.raises(ValueError, match="not a whole number"):
        STL10(tmp_path, "test")


def test_unknown_split(tmp_path):
    with pytest.raises(ValueError, match="split must be one of"):
        STL10(tmp_path, "extra")
