"""CIFAR-10/100 read from pickles with the real layout: dicts with b'data' rows of R, G, B planes and label lists."""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sesemi.datasets.cifar import CIFAR10, CIFAR100, load_pickle
from sesemi.datasets.errors import DatasetNotFoundError


class Py2StylePickler(pickle._Pickler):
    """Pickles bytes as Python 2 ``str`` (BINSTRING) and numpy globals under numpy.core, as the official files are."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_bytes(self, obj: bytes) -> None:
        self.write(pickle.BINSTRING + len(obj).to_bytes(4, "little") + obj)
        self.memoize(obj)

    dispatch[bytes] = save_bytes

    def save_global(self, obj, name=None):
        module = getattr(obj, "__module__", "")
        if module.startswith("numpy._core"):
            module = "numpy.core" + module.removeprefix("numpy._core")
            self.write(pickle.GLOBAL + f"{module}\n{name or obj.__name__}\n".encode())
            self.memoize(obj)
        else:
            super().save_global(obj, name)


def dump(path: Path, content: dict, py2: bool = False) -> None:
    if py2:
        buffer = io.BytesIO()
        Py2StylePickler(buffer, protocol=2).dump(content)
        path.write_bytes(buffer.getvalue())
    else:
        path.write_bytes(pickle.dumps(content))


def images_to_rows(images: np.ndarray) -> np.ndarray:
    """(N, 32, 32, 3) -> the file's rows: 1024 red, then 1024 green, then 1024 blue values, each row-major."""
    return np.stack([np.concatenate([image[:, :, c].ravel() for c in range(3)]) for image in images])


def random_images(rng, n):
    return rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)


def make_cifar10(root: Path, py2: bool = False):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    train_images, train_labels = [], []
    for i in range(1, 6):
        images, labels = random_images(rng, i % 3 + 1), rng.integers(0, 10, i % 3 + 1).tolist()
        content = {b"batch_label": b"x", b"data": images_to_rows(images), b"labels": labels}
        dump(folder / f"data_batch_{i}", content, py2)
        train_images.append(images)
        train_labels += labels
    test_images, test_labels = random_images(rng, 3), [9, 0, 4]
    dump(folder / "test_batch", {b"data": images_to_rows(test_images), b"labels": test_labels}, py2)
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
    dump(folder / "batches.meta", {b"label_names": names, b"num_vis": 3072}, py2)
    return folder, np.concatenate(train_images), train_labels, test_images, test_labels


def assert_images(dataset, images, labels):
    assert len(dataset) == len(images) == len(dataset.targets)
    assert dataset.targets == list(labels)
    for i in range(len(dataset)):
        image, target = dataset[i]
        assert isinstance(image, Image.Image) and image.mode == "RGB" and image.size == (32, 32)
        np.testing.assert_array_equal(np.asarray(image), images[i])
        assert type(target) is int and target == labels[i]


@pytest.mark.parametrize("py2", [False, True], ids=["py3-pickle", "py2-pickle"])
def test_cifar10(tmp_path, py2):
    folder, train_images, train_labels, test_images, test_labels = make_cifar10(tmp_path, py2)
    train, test = CIFAR10(tmp_path, "train"), CIFAR10(tmp_path, split="test")
    assert_images(train, train_images, train_labels)
    assert_images(test, test_images, test_labels)
    assert train.classes[:3] == ["airplane", "automobile", "bird"] and len(train.classes) == 10
    # root may also be the extracted folder itself
    assert_images(CIFAR10(folder, "test"), test_images, test_labels)


def test_py2_pickle_goes_through_numpy_core(tmp_path):
    path = tmp_path / "p"
    dump(path, {b"data": np.arange(6, dtype=np.uint8)}, py2=True)
    assert b"numpy.core.multiarray" in path.read_bytes()
    np.testing.assert_array_equal(load_pickle(path)["data"], np.arange(6))


def test_cifar100_fine_and_coarse(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    rng = np.random.default_rng(1)
    fine_names = [f"fine{i}".encode() for i in range(100)]
    coarse_names = [f"coarse{i}".encode() for i in range(20)]
    dump(folder / "meta", {b"fine_label_names": fine_names, b"coarse_label_names": coarse_names})
    splits = {}
    for split, n in [("train", 5), ("test", 2)]:
        images = random_images(rng, n)
        fine, coarse = rng.integers(0, 100, n).tolist(), rng.integers(0, 20, n).tolist()
        content = {b"data": images_to_rows(images), b"fine_labels": fine, b"coarse_labels": coarse}
        dump(folder / split, content)
        splits[split] = images, fine, coarse

    for split, (images, fine, coarse) in splits.items():
        fine_ds = CIFAR100(tmp_path, split)
        coarse_ds = CIFAR100(folder, split, coarse=True)
        assert_images(fine_ds, images, fine)
        assert_images(coarse_ds, images, coarse)
        assert fine_ds.classes == [n.decode() for n in fine_names]
        assert coarse_ds.classes == [n.decode() for n in coarse_names]


def test_missing_cifar10_names_folder_files_and_url(tmp_path):
    with pytest.raises(DatasetNotFoundError) as info:
        CIFAR10(tmp_path / "cifar10")
    message = str(info.value)
    assert str(tmp_path / "cifar10" / "cifar-10-batches-py") in message
    assert all(f"data_batch_{i}" in message for i in range(1, 6)) and "batches.meta" in message
    assert "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz" in message
    assert f"-C {tmp_path / 'cifar10'}" in message and "run.data_root" in message


def test_missing_one_batch_is_named(tmp_path):
    folder, *_ = make_cifar10(tmp_path)
    (folder / "data_batch_3").unlink()
    assert len(CIFAR10(tmp_path, "test")) == 3  # the test split does not need it
    with pytest.raises(DatasetNotFoundError, match=r"\(missing: data_batch_3\)"):
        CIFAR10(tmp_path, "train")


def test_missing_cifar100(tmp_path):
    with pytest.raises(DatasetNotFoundError) as error:
        CIFAR100(tmp_path, "test")
    message = str(error.value)
    assert str(tmp_path / "cifar-100-python") in message and "test, meta" in message
    assert "cifar-100-python.tar.gz" in message


def test_pickles_that_would_run_code_are_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            import os

            return os.system, ("echo pwned",)

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in ["test_batch", "batches.meta"]:
        (folder / name).write_bytes(pickle.dumps({b"data": Evil()}))
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        CIFAR10(tmp_path, "test")


def test_unknown_split(tmp_path):
    with pytest.raises(ValueError, match="split must be one of"):
        CIFAR10(tmp_path, "extra")
