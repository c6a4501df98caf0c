"""MNIST and Fashion-MNIST read from idx files written in the real format (gzipped and plain)."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sesemi.datasets.errors import DatasetNotFoundError
from sesemi.datasets.idx import MNIST, FashionMNIST, read_idx

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
FASHION_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip
_CODES = {np.dtype("u1"): 0x08, np.dtype("i1"): 0x09, np.dtype("i2"): 0x0B, np.dtype("i4"): 0x0C}


def write_idx(path: Path, array: np.ndarray, gz: bool) -> Path:
    """Writes ``array`` as an idx file: magic 0, 0, type code, ndim; big-endian int32 dims; big-endian data."""
    header = bytes([0, 0, _CODES[array.dtype], array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    content = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(content))
    else:
        path.write_bytes(content)
    return path


def make_split(root: Path, prefix: str, n: int, gz_images: bool, gz_labels: bool, seed: int = 0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n, dtype=np.uint8)
    write_idx(root / f"{prefix}-images-idx3-ubyte", images, gz_images)
    write_idx(root / f"{prefix}-labels-idx1-ubyte", labels, gz_labels)
    return images, labels


@pytest.mark.parametrize("gz_images, gz_labels", [(True, True), (False, False), (False, True)])
@pytest.mark.parametrize("cls", [MNIST, FashionMNIST])
def test_reads_idx_files(tmp_path, cls, gz_images, gz_labels):
    train_images, train_labels = make_split(tmp_path, "train", 7, gz_images, gz_labels, seed=1)
    test_images, test_labels = make_split(tmp_path, "t10k", 4, gz_images, gz_labels, seed=2)

    train, test = cls(tmp_path, split="train"), cls(str(tmp_path), split="test")

    assert (len(train), len(test)) == (7, 4)
    assert train.targets == train_labels.tolist() and test.targets == test_labels.tolist()
    assert all(type(t) is int for t in train.targets)
    assert train.classes == (FASHION_CLASSES if cls is FashionMNIST else [str(d) for d in range(10)])
    for dataset, images, labels in [(train, train_images, train_labels), (test, test_images, test_labels)]:
        for i in range(len(dataset)):
            image, target = dataset[i]
            assert isinstance(image, Image.Image) and image.mode == "L" and image.size == (28, 28)
            np.testing.assert_array_equal(np.asarray(image), images[i])
            assert type(target) is int and target == labels[i]


def test_default_split_is_train(tmp_path):
    make_split(tmp_path, "train", 3, True, True)
    assert len(MNIST(tmp_path)) == 3


def test_read_idx_wider_types_are_big_endian(tmp_path):
    array = np.array([[1, -2, 70000], [3, 2**30, -(2**31)]], dtype=np.int32)
    result = read_idx(write_idx(tmp_path / "x-idx2-int", array, gz=False))
    np.testing.assert_array_equal(result, array)
    assert result.dtype == np.int32 and result.dtype.isnative


def test_read_idx_rejects_bad_magic_and_truncation(tmp_path):
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x00\x00\x07\x01" + struct.pack(">I", 1) + b"\x00")
    with pytest.raises(ValueError, match="not an idx file"):
        read_idx(bad)
    short = write_idx(tmp_path / "short", np.zeros((2, 3), np.uint8), gz=False)
    short.write_bytes(short.read_bytes()[:-1])
    with pytest.raises(ValueError, match="announces"):
        read_idx(short)


def test_mismatched_counts_are_rejected(tmp_path):
    make_split(tmp_path, "train", 3, False, False)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(2, np.uint8), gz=False)
    with pytest.raises(ValueError, match="do not form"):
        MNIST(tmp_path)


def test_unknown_split(tmp_path):
    with pytest.raises(ValueError, match="split must be one of"):
        MNIST(tmp_path, split="val")


def test_missing_files_error_names_directory_files_and_source(tmp_path):
    with pytest.raises(DatasetNotFoundError) as info:
        MNIST(tmp_path / "mnist", split="test")
    message = str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    assert str(tmp_path / "mnist") in message
    assert "t10k-images-idx3-ubyte[.gz]" in message and "t10k-labels-idx1-ubyte[.gz]" in message
    assert "http://yann.lecun.com/exdb/mnist/" in message and "run.data_root" in message


def test_missing_labels_only(tmp_path):
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((1, 28, 28), np.uint8), gz=True)
    with pytest.raises(DatasetNotFoundError, match=r"missing: train-labels-idx1-ubyte\[\.gz\]"):
        FashionMNIST(tmp_path)


def test_fashion_mnist_error_explains_the_debian_package(tmp_path):
    with pytest.raises(DatasetNotFoundError) as error:
        FashionMNIST(tmp_path / "fashion-mnist")
    message = str(error.value)
    assert "apt-get install dataset-fashion-mnist" in message
    assert f"ln -s /usr/share/datasets/fashion-mnist {tmp_path / 'fashion-mnist'}" in message
    assert "train-images-idx3-ubyte[.gz]" in message


@pytest.mark.skipif(not FASHION_MNIST.is_dir(), reason="dataset-fashion-mnist is not installed")
def test_real_fashion_mnist():
    train, test = FashionMNIST(FASHION_MNIST, "train"), FashionMNIST(FASHION_MNIST, "test")
    assert (len(train), len(test)) == (60000, 10000)
    assert len(train.targets) == 60000 and len(test.targets) == 10000
    assert train.targets[0] == 9 and train.classes[train.targets[0]] == "Ankle boot"
    assert sorted(set(train.targets)) == list(range(10))
    assert np.bincount(train.targets).tolist() == [6000] * 10
    image, target = train[0]
    assert image.mode == "L" and image.size == (28, 28) and target == 9
    assert 0 < np.asarray(image).mean() < 255
