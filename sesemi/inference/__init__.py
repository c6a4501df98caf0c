"""Inference with a trained checkpoint: rebuild its network (:mod:`.checkpoint`, :mod:`.build`), predict images or
a dataset with optional test-time augmentation (:mod:`.model`, :mod:`.inputs`), write the CSV (:mod:`.predictions`),
and pseudo-label a folder for a Noisy-Student step (:mod:`.noisy_student`). The commands around them are
``python -m sesemi.predict`` and ``python -m sesemi.pseudo_label``."""

from sesemi.inference.inputs import dataset_input, image_folder
from sesemi.inference.model import InferenceModel, tta_views
from sesemi.inference.noisy_student import PseudoLabels, pseudo_label_folder
from sesemi.inference.predictions import Predictions, write_predictions

__all__ = [
    "InferenceModel",
    "Predictions",
    "PseudoLabels",
    "dataset_input",
    "image_folder",
    "pseudo_label_folder",
    "tta_views",
    "write_predictions",
]
