import numpy as np
import pytest

from sesemi.data import split_indices
from sesemi.datasets import Digits
from sesemi.errors import ConfigError


@pytest.fixture(scope="module")
def targets() -> np.ndarray:
    return np.asarray(Digits(split="train").targets)


def test_exact_labels_per_class_and_no_overlap(targets):
    split = split_indices(targets, labels_per_class=7, val_per_class=5, seed=3)
    assert np.bincount(targets[split.labeled]).tolist() == [7] * 10
    assert np.bincount(targets[split.val]).tolist() == [5] * 10
    every = np.concatenate([split.labeled, split.unlabeled, split.val])
    assert len(every) == len(set(every.tolist())) == len(targets)


def test_seeded_determinism(targets):
    a = split_indices(targets, labels_per_class=4, seed=1)
    b = split_indices(targets, labels_per_class=4, seed=1)
    c = split_indices(targets, labels_per_class=4, seed=2)
    assert np.array_equal(a.labeled, b.labeled)
    assert not np.array_equal(a.labeled, c.labeled)


def test_fraction_is_stratified(targets):
    split = split_indices(targets, label_fraction=0.1, seed=0)
    counts = np.bincount(targets[split.labeled])
    expected = np.round(np.bincount(targets) * 0.1)
    assert np.array_equal(counts, expected)


def test_unlabeled_samples_are_never_labeled():
    targets = [0, 0, 0, 1, 1, 1, -1, -1]
    split = split_indices(targets, labels_per_class=2, seed=0)
    assert set(split.labeled.tolist()).isdisjoint({6, 7})
    assert {6, 7} <= set(split.unlabeled.tolist())


def test_more_labels_than_exist_names_key_and_limit(targets):
    with pytest.raises(ConfigError) as err:
        split_indices(targets, labels_per_class=1000, seed=0)
    assert err.value.key == "data.labels_per_class"
    assert "at most" in str(err.value)


@pytest.mark.parametrize("value", [2.5, "4", True])
def test_labels_per_class_must_be_a_whole_number(targets, value):
    with pytest.raises(ConfigError) as err:
        split_indices(targets, labels_per_class=value, seed=0)
    assert err.value.key == "data.labels_per_class"
    assert f"must be a whole number of samples per class, got {value!r}" in str(err.value)
    assert "data.labels_per_class=2," in err.value.fix if value == 2.5 else "data.labels_per_class=4," in err.value.fix


def test_a_class_without_samples_is_named(targets):
    classes = [str(d) for d in range(10)] + ["empty"]  # an 11th class that no sample has
    for keys in ({"labels_per_class": 4}, {"label_fraction": 0.1}, {"val_per_class": 2}):
        with pytest.raises(ConfigError, match="class\\(es\\) 'empty' have none"):
            split_indices(targets, classes=classes, seed=0, **keys)
