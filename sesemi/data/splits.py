"""Stratified, seeded selection of labeled / unlabeled / held-out validation indices."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from sesemi.errors import ConfigError


@dataclass(frozen=True)
class Split:
    """Disjoint index sets into the training dataset."""

    labeled: np.ndarray
    unlabeled: np.ndarray
    val: np.ndarray


def _per_class_counts(
    counts: np.ndarray, per_class: int | None, fraction: float | None, keys: tuple[str, str]
) -> np.ndarray:
    """How many samples to take from each class, given exactly one of ``per_class`` or ``fraction``."""
    if per_class is not None:
        if isinstance(per_class, bool) or not isinstance(per_class, (int, np.integer)):
            whole = int(per_class) if isinstance(per_class, float) and per_class >= 1 else 4
            raise ConfigError(
                keys[0],
                f"must be a whole number of samples per class, got {per_class!r}",
                f"use a whole number, e.g. {keys[0]}={whole}, or a fraction of each class with {keys[1]}",
            )
        if per_class < 1:
            raise ConfigError(keys[0], f"must be >= 1, got {per_class}", "use a positive count or null")
        return np.full_like(counts, per_class)
    assert fraction is not None
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0.0 < fraction <= 1.0:
        raise ConfigError(keys[1], f"must be in (0, 1], got {fraction!r}", f"use a fraction such as {keys[1]}=0.1")
    return np.maximum(1, np.round(counts * fraction)).astype(int)


def _take(
    targets: np.ndarray,
    pool: np.ndarray,
    per_class: int | None,
    fraction: float | None,
    rng: np.random.Generator,
    keys: tuple[str, str],
    classes: Sequence[str] | None,
) -> np.ndarray:
    """``per_class`` samples (or ``fraction``) of each class, drawn from ``pool``; every class of ``classes``
    counts, so a class with no samples left is named instead of silently getting none."""
    labels = np.unique(targets[pool])
    if classes is not None:
        labels = np.union1d(labels, np.arange(len(classes)))
    counts = np.array([np.count_nonzero(targets[pool] == c) for c in labels])
    wanted = _per_class_counts(counts, per_class, fraction, keys)

    def name(label: int) -> str:
        return classes[label] if classes is not None and label < len(classes) else str(label)

    empty = [name(label) for label, have in zip(labels, counts) if have == 0]
    if empty:
        raise ConfigError(
            keys[0],
            f"asks for samples of every class but class(es) {', '.join(map(repr, empty))} have none",
            "give those classes samples (an image folder: images in their class folders), or leave them out of the "
            "dataset's classes",
        )
    chosen = []
    for label, have, want in zip(labels, counts, wanted):
        if want > have:
            raise ConfigError(
                keys[0],
                f"asks for {want} samples of class {name(label)!r} but only {have} are available",
                f"lower {keys[0]} to at most {counts.min()} or use {keys[1]}",
            )
        members = pool[targets[pool] == label]
        chosen.append(rng.permutation(members)[:want])
    return np.sort(np.concatenate(chosen)) if chosen else np.empty(0, dtype=int)


def split_indices(
    targets: Sequence[int],
    *,
    labels_per_class: int | None = None,
    label_fraction: float | None = None,
    val_per_class: int | None = None,
    val_fraction: float | None = None,
    seed: int = 0,
    classes: Sequence[str] | None = None,
) -> Split:
    """Split a labeled training set into labeled, unlabeled and (optionally) held-out validation indices.

    The validation hold-out is drawn first, then the labeled subset from what remains; every other sample becomes
    unlabeled. With neither ``labels_per_class`` nor ``label_fraction`` all remaining samples are labeled.
    Samples whose target is negative are never labeled or held out.
    """
    if labels_per_class is not None and label_fraction is not None:
        raise ConfigError(
            "data.labels_per_class", "is set together with data.label_fraction", "set only one of the two to null"
        )
    if val_per_class is not None and val_fraction is not None:
        raise ConfigError("data.val_per_class", "is set together with data.val_fraction", "set one of them to null")
    y = np.asarray(targets, dtype=int)
    rng = np.random.default_rng(seed)
    pool = np.flatnonzero(y >= 0)
    val = np.empty(0, dtype=int)
    if val_per_class is not None or val_fraction is not None:
        val = _take(y, pool, val_per_class, val_fraction, rng, ("data.val_per_class", "data.val_fraction"), classes)
        pool = np.setdiff1d(pool, val, assume_unique=True)
    if labels_per_class is None and label_fraction is None:
        labeled = pool
    else:
        labeled = _take(
            y, pool, labels_per_class, label_fraction, rng, ("data.labels_per_class", "data.label_fraction"), classes
        )
    unlabeled = np.setdiff1d(np.arange(len(y)), np.concatenate([labeled, val]), assume_unique=True)
    return Split(labeled=labeled, unlabeled=unlabeled, val=val)
