"""SVHN read from .mat files in the official layout: X (32, 32, 3, N) uint8 and y (N, 1) with 10 for the digit 0."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.io
from PIL import Image

from sesemi.datasets.errors import DatasetNotFoundError
from sesemi.datasets.svhn import SVHN


def write_mat(path, n, seed):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(1, 11, size=n).astype(np.uint8)
    labels[0] = 10
    scipy.io.savemat(path, {"X": np.moveaxis(images, 0, 3), "y": labels.reshape(n, 1)})
    return images, labels


@pytest.mark.parametrize("split, n", [("train", 6), ("test", 3), ("extra", 4)])
def test_svhn(tmp_path, split, n):
    images, labels = write_mat(tmp_path / f"{split}_32x32.mat", n, seed=n)
    dataset = SVHN(tmp_path, split)
    assert len(dataset) == n
    assert dataset.targets == [int(label) % 10 for label in labels] and dataset.targets[0] == 0
    assert dataset.classes == [str(d) for d in range(10)]
    for i in range(n):
        image, target = dataset[i]
        assert isinstance(image, Image.Image) and image.mode == "RGB" and image.size == (32, 32)
        np.testing.assert_array_equal(np.asarray(image), images[i])
        assert type(target) is int and target == labels[i] % 10


def test_float_labels_as_matlab_may_store_them(tmp_path):
    content = {"X": np.zeros((32, 32, 3, 2), np.uint8), "y": np.array([[10.0], [3.0]])}
    scipy.io.savemat(tmp_path / "test_32x32.mat", content)
    assert SVHN(tmp_path, "test").targets == [0, 3]


def test_only_the_requested_split_is_needed(tmp_path):
    write_mat(tmp_path / "test_32x32.mat", 2, seed=0)
    assert len(SVHN(tmp_path, "test")) == 2
    with pytest.raises(DatasetNotFoundError) as info:
        SVHN(tmp_path)
    message = str(info.value)
    assert str(tmp_path) in message and "train_32x32.mat" in message
    assert "http://ufldl.stanford.edu/housenumbers/train_32x32.mat" in message and "run.data_root" in message


def test_bad_shape(tmp_path):
    scipy.io.savemat(tmp_path / "train_32x32.mat", {"X": np.zeros((32, 32, 3, 2), np.uint8), "y": np.ones((3, 1))})
    with pytest.raises(ValueError, match="does not hold"):
        SVHN(tmp_path)


def test_unknown_split(tmp_path):
    with pytest.raises(ValueError, match="split must be one of"):
        SVHN(tmp_path, "unlabeled")
