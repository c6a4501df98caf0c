"""Loss heads: each is one term of the training objective (see :mod:`sesemi.losses.base`)."""

from sesemi.losses.base import (
    LossHead,
    PseudoLabels,
    StepContext,
    gather_across_ranks,
    linear_rampup,
    sigmoid_rampup,
    sum_across_ranks,
)
from sesemi.losses.consistency import ConsistencyHead, softmax_kl, softmax_mse
from sesemi.losses.entropy import EntropyMinimizationHead, prediction_entropy
from sesemi.losses.fixmatch import FixMatchHead, confident_pseudo_labels
from sesemi.losses.flexmatch import FlexMatchHead, curriculum_thresholds
from sesemi.losses.freematch import FreeMatchHead, self_adaptive_fairness
from sesemi.losses.graph_contrastive import GraphContrastiveHead, pseudo_label_graph
from sesemi.losses.jigsaw import JigsawHead, jigsaw_permutations, shuffle_tiles
from sesemi.losses.pseudo_label import PseudoLabelHead, masked_cross_entropy
from sesemi.losses.rotation import JointRotationHead, RotationHead, rotate_batch
from sesemi.losses.simmatch import SimMatchHead, aggregate_labels, unfold_labels
from sesemi.losses.softmatch import SoftMatchHead
from sesemi.losses.supervised import CrossEntropyHead
from sesemi.losses.weak_strong import DistributionAlignment, WeakStrongHead

__all__ = [
    "ConsistencyHead",
    "CrossEntropyHead",
    "DistributionAlignment",
    "EntropyMinimizationHead",
    "FixMatchHead",
    "FlexMatchHead",
    "FreeMatchHead",
    "GraphContrastiveHead",
    "JigsawHead",
    "JointRotationHead",
    "LossHead",
    "PseudoLabelHead",
    "PseudoLabels",
    "RotationHead",
    "SimMatchHead",
    "SoftMatchHead",
    "StepContext",
    "WeakStrongHead",
    "aggregate_labels",
    "confident_pseudo_labels",
    "curriculum_thresholds",
    "gather_across_ranks",
    "jigsaw_permutations",
    "linear_rampup",
    "masked_cross_entropy",
    "prediction_entropy",
    "pseudo_label_graph",
    "rotate_batch",
    "self_adaptive_fairness",
    "shuffle_tiles",
    "sigmoid_rampup",
    "softmax_kl",
    "softmax_mse",
    "sum_across_ranks",
    "unfold_labels",
]
