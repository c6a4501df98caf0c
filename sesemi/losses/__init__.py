"""Loss heads: each is one term of the training objective (see :mod:`sesemi.losses.base`)."""

from sesemi.losses.base import LossHead, StepContext, linear_rampup, sigmoid_rampup
from sesemi.losses.fixmatch import FixMatchHead, confident_pseudo_labels
from sesemi.losses.rotation import RotationHead, rotate_batch
from sesemi.losses.supervised import CrossEntropyHead

__all__ = [
    "CrossEntropyHead",
    "FixMatchHead",
    "LossHead",
    "RotationHead",
    "StepContext",
    "confident_pseudo_labels",
    "linear_rampup",
    "rotate_batch",
    "sigmoid_rampup",
]
