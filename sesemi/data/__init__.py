"""Data: the semi-supervised data module, labeled-subset splits and augmentation building blocks."""

from sesemi.data.batched import batch_pipeline
from sesemi.data.datamodule import SemiSupervisedDataModule, ViewDataset
from sesemi.data.splits import Split, split_indices
from sesemi.data.transforms import MultiView, cutout, pipeline, to_normalized_tensor

__all__ = [
    "MultiView",
    "SemiSupervisedDataModule",
    "Split",
    "ViewDataset",
    "batch_pipeline",
    "cutout",
    "pipeline",
    "split_indices",
    "to_normalized_tensor",
]
