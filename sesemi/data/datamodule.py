"""The data module: labeled and unlabeled training streams drawn from one dataset, plus validation and test."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from pytorch_lightning import LightningDataModule
from pytorch_lightning.utilities import CombinedLoader
from torch.utils.data import ConcatDataset, DataLoader, Dataset

from sesemi.data.splits import Split, split_indices
from sesemi.data.transforms import MultiView, Transform
from sesemi.errors import ConfigError


class ViewDataset(Dataset):
    """A subset of a dataset whose samples become ``{view name: tensor, ..., "target": int}`` dicts."""

    def __init__(self, dataset: Dataset, indices: Sequence[int] | None, views: MultiView) -> None:
        self.dataset = dataset
        self.indices = list(range(len(dataset))) if indices is None else [int(i) for i in indices]
        self.views = views

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict[str, Any]:
        image, target = self.dataset[self.indices[i]]
        sample: dict[str, Any] = self.views(image)
        sample["target"] = target
        return sample

    def targets(self) -> list[int]:
        """The labels of the subset (-1 where the dataset has none)."""
        targets = getattr(self.dataset, "targets", None)
        return [int(targets[i]) for i in self.indices] if targets is not None else [-1] * len(self.indices)


class UnlabeledPool(Dataset):
    """The unlabeled stream's datasets as one: a sample carries its ``index`` in the pool, never its label.

    ``targets`` keeps the true labels aside (-1 where unknown) so the training module can score pseudo-labels
    without a loss head ever seeing them."""

    def __init__(self, parts: Sequence[ViewDataset]) -> None:
        self.pool = ConcatDataset(parts)
        self.targets = torch.tensor([t for part in parts for t in part.targets()], dtype=torch.long)

    def __len__(self) -> int:
        return len(self.pool)

    def __getitem__(self, i: int) -> dict[str, Any]:
        sample = self.pool[i]
        del sample["target"]
        sample["index"] = i
        return sample


def _targets(dataset: Dataset, key: str) -> list[int]:
    targets = getattr(dataset, "targets", None)
    if targets is None:
        raise ConfigError(
            key,
            f"{type(dataset).__name__} has no 'targets' attribute",
            "give the dataset a `targets` list of int labels (-1 for unlabeled) as the sesemi dataset API requires",
        )
    return [int(t) for t in targets]


class SemiSupervisedDataModule(LightningDataModule):
    """Yields ``{"labeled": {views..., "target"}, "unlabeled": {views..., "index"}}`` training batches (an unlabeled
    sample's label stays aside, in :meth:`unlabeled_targets`); validation/test ``{"image", "target"}``.

    The training set is split (stratified, seeded) into a labeled subset, an unlabeled rest and optionally a held-out
    validation set; ``extra_unlabeled`` datasets join the unlabeled stream. Each stream applies its named views, e.g.
    ``unlabeled_views={"weak": ..., "strong": ...}``. The two streams are combined with Lightning's
    ``CombinedLoader(mode="max_size_cycle")``; under DDP Lightning gives each loader a ``DistributedSampler``, so
    ranks see disjoint shards.
    """

    def __init__(
        self,
        train: Dataset,
        val: Dataset | None = None,
        test: Dataset | None = None,
        *,
        labeled_views: Mapping[str, Transform],
        unlabeled_views: Mapping[str, Transform] | None = None,
        eval_transform: Transform,
        extra_unlabeled: Sequence[Dataset] | None = None,
        labels_per_class: int | None = None,
        label_fraction: float | None = None,
        val_per_class: int | None = None,
        val_fraction: float | None = None,
        split_seed: int = 0,
        labeled_batch_size: int = 64,
        unlabeled_batch_size: int = 0,
        eval_batch_size: int = 256,
        num_workers: int = 0,
        persistent_workers: bool = True,
        pin_memory: bool | None = None,
    ) -> None:
        super().__init__()
        self.train_set, self.val_set, self.test_set = train, val, test
        self.labeled_views = MultiView(labeled_views)
        self.unlabeled_views = MultiView(unlabeled_views) if unlabeled_views else None
        self.eval_views = MultiView({"image": eval_transform})
        self.extra_unlabeled = list(extra_unlabeled or [])
        self.split_args = dict(
            labels_per_class=labels_per_class,
            label_fraction=label_fraction,
            val_per_class=val_per_class,
            val_fraction=val_fraction,
            seed=split_seed,
        )
        self.labeled_batch_size = labeled_batch_size
        self.unlabeled_batch_size = unlabeled_batch_size
        self.eval_batch_size = eval_batch_size
        self.num_workers = num_workers
        self.persistent_workers = persistent_workers and num_workers > 0
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
        if self.unlabeled_views is not None and unlabeled_batch_size < 1:
            raise ConfigError(
                "data.unlabeled_batch_size",
                "is 0 but the method asks for unlabeled views",
                "set data.unlabeled_batch_size to a positive batch size",
            )
        if val is None and val_per_class is None and val_fraction is None:
            raise ConfigError(
                "data.val", "no validation data", "give data.val a dataset or hold out data.val_per_class samples"
            )
        self.split: Split = split_indices(
            _targets(train, "data.train"), classes=getattr(train, "classes", None), **self.split_args
        )
        n_unlabeled = len(self.split.unlabeled) + sum(len(d) for d in self.extra_unlabeled)
        if self.unlabeled_views is not None and n_unlabeled < unlabeled_batch_size:
            raise ConfigError(
                "data.unlabeled_batch_size",
                f"is {unlabeled_batch_size} but only {n_unlabeled} unlabeled samples exist (all "
                "training samples are labeled or held out)",
                "label fewer samples (data.labels_per_class), add data.extra_unlabeled, or use method=supervised",
            )
        if len(self.split.labeled) < labeled_batch_size:
            raise ConfigError(
                "data.labeled_batch_size",
                f"is {labeled_batch_size} but only {len(self.split.labeled)} labeled samples exist",
                f"set data.labeled_batch_size <= {len(self.split.labeled)}",
            )

    @property
    def num_classes(self) -> int:
        classes = getattr(self.train_set, "classes", None)
        return len(classes) if classes else max(_targets(self.train_set, "data.train")) + 1

    @property
    def class_names(self) -> list[str] | None:
        classes = getattr(self.train_set, "classes", None)
        return [str(c) for c in classes] if classes else None

    @property
    def has_unlabeled(self) -> bool:
        return self.unlabeled_views is not None

    def unlabeled_dataset(self) -> UnlabeledPool:
        parts = [ViewDataset(self.train_set, self.split.unlabeled, self.unlabeled_views)]
        parts += [ViewDataset(extra, None, self.unlabeled_views) for extra in self.extra_unlabeled]
        return UnlabeledPool(parts)

    def unlabeled_targets(self) -> torch.Tensor | None:
        """True labels of the unlabeled pool by sample ``index`` (-1 where unknown), or None when none is known (e.g.
        a folder of unlabeled images): the pseudo-label quality metrics are then off."""
        if self.unlabeled_views is None:
            return None
        targets = self.unlabeled_dataset().targets
        return targets if bool((targets >= 0).any()) else None

    def _loader(self, dataset: Dataset, batch_size: int, train: bool) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=train,
            drop_last=train,
            num_workers=self.num_workers,
            persistent_workers=self.persistent_workers,
            pin_memory=self.pin_memory,
        )

    def train_dataloader(self) -> CombinedLoader:
        loaders = {
            "labeled": self._loader(
                ViewDataset(self.train_set, self.split.labeled, self.labeled_views), self.labeled_batch_size, True
            )
        }
        if self.unlabeled_views is not None:
            loaders["unlabeled"] = self._loader(self.unlabeled_dataset(), self.unlabeled_batch_size, True)
        return CombinedLoader(loaders, mode="max_size_cycle")

    def _eval_set(self) -> Dataset:
        if self.val_set is not None:
            return ViewDataset(self.val_set, None, self.eval_views)
        return ViewDataset(self.train_set, self.split.val, self.eval_views)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self._eval_set(), self.eval_batch_size, False)

    def test_dataloader(self) -> DataLoader:
        dataset = ViewDataset(self.test_set, None, self.eval_views) if self.test_set is not None else self._eval_set()
        return self._loader(dataset, self.eval_batch_size, False)

    def describe(self) -> str:
        n_extra = sum(len(d) for d in self.extra_unlabeled)
        return (
            f"{len(self.split.labeled)} labeled, {len(self.split.unlabeled) + n_extra} unlabeled"
            f"{' (used)' if self.has_unlabeled else ' (unused)'}, {len(self._eval_set())} validation"
        )
