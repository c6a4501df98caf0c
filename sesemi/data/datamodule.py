"""The data module: labeled and unlabeled training streams drawn from one dataset, plus validation and test."""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch
from pytorch_lightning import LightningDataModule
from pytorch_lightning.utilities import CombinedLoader
from torch.utils.data import ConcatDataset, DataLoader, Dataset, Subset

from sesemi.data import workers
from sesemi.data.image_check import check_dataset_images
from sesemi.data.splits import Split, split_indices
from sesemi.data.transforms import MultiView, Transform
from sesemi.errors import ConfigError, list_override


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

    def collate(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        return self.views.collate(samples)

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
        self.collate = parts[0].collate  # one MultiView for every part
        self.targets = torch.tensor([t for part in parts for t in part.targets()], dtype=torch.long)

    def __len__(self) -> int:
        return len(self.pool)

    def __getitem__(self, i: int) -> dict[str, Any]:
        sample = self.pool[i]
        del sample["target"]
        sample["index"] = i
        return sample


class DelayedLoader(DataLoader):
    """A training loader that yields ``None`` for the batches of an epoch that are trained before the step its stream
    is first read at (e.g. the unlabeled stream during a supervised warm-up): nothing is loaded or augmented for them,
    the workers get no indices until the first real batch. ``skip_batches`` returns how many batches of the epoch
    starting now to skip (asked at each epoch start, so a resumed run skips by its restored step); the epoch keeps
    ``len(self)`` batches. A DataLoader subclass, so Lightning still gives it a DistributedSampler under DDP.
    """

    def __init__(self, *args: Any, skip_batches: Callable[[], int], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.skip_batches = skip_batches

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        skip = min(max(self.skip_batches(), 0), len(self))
        yield from itertools.repeat(None, skip)
        if skip < len(self):
            yield from itertools.islice(super().__iter__(), len(self) - skip)


def _targets(dataset: Dataset, key: str) -> list[int]:
    targets = getattr(dataset, "targets", None)
    if targets is None:
        raise ConfigError(
            key,
            f"{type(dataset).__name__} has no 'targets' attribute",
            "give the dataset a `targets` list of int labels (-1 for unlabeled) as the sesemi dataset API requires",
        )
    return [int(t) for t in targets]


def _check_batch_size(key: str, value: Any, least: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ConfigError(
            key,
            f"must be a whole number of samples per batch{' (0: no unlabeled stream)' if least == 0 else ''}, at "
            f"least {least}, got {value!r}",
            f"set e.g. {key}=16",
        )


def batches_per_process(samples: int, batch_size: int, world_size: int = 1) -> int:
    """Full batches each training process draws per epoch: Lightning's DistributedSampler gives every process
    ``ceil(samples / world_size)`` samples, and training loaders drop the last partial batch."""
    return math.ceil(samples / world_size) // batch_size


class SemiSupervisedDataModule(LightningDataModule):
    """Yields ``{"labeled": {views..., "target"}, "unlabeled": {views..., "index"}}`` training batches (an unlabeled
    sample's label stays aside, in :meth:`unlabeled_targets`); validation/test ``{"image", "target"}``.

    The training set is split (stratified, seeded) into a labeled subset, an unlabeled rest and optionally a held-out
    validation set; ``extra_unlabeled`` datasets join the unlabeled stream. Each stream applies its named views, e.g.
    ``unlabeled_views={"weak": ..., "strong": ...}``. The two streams are combined with Lightning's
    ``CombinedLoader(mode="max_size_cycle")``; a stream whose :attr:`stream_start_steps` entry is a later step (set by
    the training app from the loss heads' ``start_step``) yields ``None`` batches, unloaded, until then. Under DDP
    Lightning gives each loader a ``DistributedSampler``, so ranks see disjoint shards. Every loader's workers ignore
    the training process's signals and are seeded by
    Lightning (:mod:`sesemi.data.workers`); a ``worker_init_fn`` of your own runs after that.
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
        worker_init_fn: Callable[[int], None] | None = None,
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
        self.worker_init_fn = workers.worker_init_fn(worker_init_fn)  # workers leave signals to the training process
        self.stream_start_steps: dict[str, int] = {}  # stream -> the first training step any loss head reads it at
        _check_batch_size("data.labeled_batch_size", labeled_batch_size, 1)
        _check_batch_size("data.unlabeled_batch_size", unlabeled_batch_size, 0)
        _check_batch_size("data.eval_batch_size", eval_batch_size, 1)
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
        self._check_classes()

    @property
    def num_classes(self) -> int:
        classes = getattr(self.train_set, "classes", None)
        return len(classes) if classes else max(_targets(self.train_set, "data.train")) + 1

    @property
    def class_names(self) -> list[str] | None:
        classes = getattr(self.train_set, "classes", None)
        return [str(c) for c in classes] if classes else None

    def _check_classes(self) -> None:
        """At least two training classes, and validation/test sets whose class indices are the training set's."""
        names = self.class_names
        if self.num_classes < 2:
            raise ConfigError(
                "data.train",
                f"has {self.num_classes} class ({', '.join(names or ['0'])}); a classifier needs at least 2",
                "give the training data two or more classes (ImageFolder: one sub-folder per class)",
            )
        for key, dataset in (("data.val", self.val_set), ("data.test", self.test_set)):
            classes = getattr(dataset, "classes", None)
            if dataset is None or classes is None or names is None or list(map(str, classes)) == names:
                continue
            unknown = [c for c in map(str, classes) if c not in names]
            missing = [c for c in names if c not in map(str, classes)]
            problem = f"has classes {list(map(str, classes))} but the training classes are {names}"
            if unknown:
                problem += f" (unknown to training: {unknown})"
            if missing:
                problem += f" (missing: {missing})"
            raise ConfigError(
                key,
                problem + "; class indices come from the training classes, so its labels would not match",
                f"give {key} the training classes, in their order, each with its folder of images: add "
                f"{list_override(f'{key}.classes', names)} to the command (an ImageFolder reads the class folders "
                "it names, in that order)",
            )

    def check_batches(self, world_size: int = 1, processes: str = "one process") -> None:
        """Every training process gets at least one full labeled (and unlabeled) batch per epoch."""
        n_unlabeled = len(self.split.unlabeled) + sum(len(d) for d in self.extra_unlabeled)
        streams = [("labeled", len(self.split.labeled), self.labeled_batch_size)]
        if self.unlabeled_views is not None:
            streams.append(("unlabeled", n_unlabeled, self.unlabeled_batch_size))
        for stream, samples, batch_size in streams:
            if batches_per_process(samples, batch_size, world_size) >= 1:
                continue
            per_process = math.ceil(samples / world_size)
            where = f"each of the {world_size} processes ({processes}) gets" if world_size > 1 else "there are"
            fixes = [f"set data.{stream}_batch_size <= {samples // world_size}"] if samples >= world_size else []
            if stream == "labeled":
                fixes.append("label more samples (data.labels_per_class)")
            else:
                fixes.append("label fewer samples (data.labels_per_class), add data.extra_unlabeled")
                fixes.append("use method=supervised")
            if world_size > 1:
                fixes.append("train on fewer processes (run.devices)")
            raise ConfigError(
                f"data.{stream}_batch_size",
                f"is {batch_size} but {where} only {per_process} of the {samples} {stream} samples, "
                "less than one batch",
                ", ".join(fixes[:-1]) + (", or " if len(fixes) > 1 else "") + fixes[-1],
            )

    def check_images(self) -> None:
        """Every image of a folder dataset goes through the views it gets in training, validation and test
        (:mod:`sesemi.data.image_check`): one clear error naming the files instead of a traceback at a batch."""
        train_views = [self.labeled_views]
        if self.unlabeled_views is not None:
            train_views.append(self.unlabeled_views)
        if self.val_set is None:  # validation is held out of train
            train_views.append(self.eval_views)
        check_dataset_images("data.train", self.train_set, train_views)
        if self.unlabeled_views is not None:
            for extra in self.extra_unlabeled:
                check_dataset_images("data.extra_unlabeled", extra, [self.unlabeled_views])
        for key, dataset in (("data.val", self.val_set), ("data.test", self.test_set)):
            if dataset is not None:
                check_dataset_images(key, dataset, [self.eval_views])

    def sample_batches(self, size: int = 2) -> dict[str, dict[str, torch.Tensor]]:
        """A few real samples of each stream, collated: ``{"labeled" | "unlabeled" | "eval": {view: images}}``."""
        streams = {"labeled": ViewDataset(self.train_set, self.split.labeled[:size], self.labeled_views)}
        if self.unlabeled_views is not None:
            unlabeled = self.unlabeled_dataset()
            streams["unlabeled"] = Subset(unlabeled, range(min(size, len(unlabeled))))
        streams["eval"] = Subset(self._eval_set(), range(min(size, len(self._eval_set()))))
        batches = {}
        for stream, dataset in streams.items():
            if len(dataset):
                collate = (dataset.dataset if isinstance(dataset, Subset) else dataset).collate
                batch = collate([dataset[i] for i in range(len(dataset))])
                batches[stream] = {k: v for k, v in batch.items() if k not in ("target", "index")}  # images only
        return batches

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

    def _loader(self, dataset: Dataset, batch_size: int, train: bool, **delay: Any) -> DataLoader:
        """A loader of ``dataset``; with ``skip_batches`` a :class:`DelayedLoader`."""
        return (DelayedLoader if delay else DataLoader)(
            dataset,
            batch_size=batch_size,
            shuffle=train,
            drop_last=train,
            num_workers=self.num_workers,
            persistent_workers=self.persistent_workers,
            pin_memory=self.pin_memory,
            worker_init_fn=self.worker_init_fn,
            multiprocessing_context=workers.loader_context(self.num_workers),
            collate_fn=getattr(dataset, "collate", None),
            **delay,
        )

    def _batches_before(self, step: int) -> int:
        """How many batches of the epoch starting now are trained before ``step`` (0 without a trainer)."""
        trainer = self.trainer
        if trainer is None:
            return 0
        return (step - trainer.global_step) * trainer.accumulate_grad_batches

    def _train_loader(self, stream: str, dataset: Dataset, batch_size: int) -> DataLoader:
        start = self.stream_start_steps.get(stream, 0)
        if start <= 0:
            return self._loader(dataset, batch_size, True)
        return self._loader(dataset, batch_size, True, skip_batches=functools.partial(self._batches_before, start))

    def train_dataloader(self) -> CombinedLoader:
        labeled = ViewDataset(self.train_set, self.split.labeled, self.labeled_views)
        loaders = {"labeled": self._train_loader("labeled", labeled, self.labeled_batch_size)}
        if self.unlabeled_views is not None:
            loaders["unlabeled"] = self._train_loader("unlabeled", self.unlabeled_dataset(), self.unlabeled_batch_size)
        return CombinedLoader(loaders, mode="max_size_cycle")

    def _eval_set(self) -> Dataset:
        if self.val_set is not None:
            return ViewDataset(self.val_set, None, self.eval_views)
        return ViewDataset(self.train_set, self.split.val, self.eval_views)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self._eval_set(), self.eval_batch_size, False)

    def test_dataloader(self) -> DataLoader:
        if self.test_set is None:
            raise ConfigError("data.test", "is null: this data config has no test set", "give data.test a dataset")
        return self._loader(ViewDataset(self.test_set, None, self.eval_views), self.eval_batch_size, False)

    def describe(self) -> str:
        n_extra = sum(len(d) for d in self.extra_unlabeled)
        return (
            f"{len(self.split.labeled)} labeled, {len(self.split.unlabeled) + n_extra} unlabeled"
            f"{' (used)' if self.has_unlabeled else ' (unused)'}, {len(self._eval_set())} validation"
        )
