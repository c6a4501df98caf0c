"""The embedded digits dataset is scikit-learn's digits with scikit-learn's stratified split (the fast loader the data
pipeline benchmark led to changes no image and no label)."""

from __future__ import annotations


def test_digits_split_is_scikit_learns():
    import numpy as np
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    from sesemi.datasets import Digits

    digits = load_digits()
    images = np.clip(digits.images * 16, 0, 255).astype(np.uint8)
    train_idx, test_idx = train_test_split(
        np.arange(len(images)), test_size=0.25, stratify=digits.target, random_state=0
    )
    for split, idx in (("train", np.sort(train_idx)), ("test", np.sort(test_idx))):
        ds = Digits(split=split)
        assert np.array_equal(ds.images, images[idx]) and ds.targets == digits.target[idx].tolist()
