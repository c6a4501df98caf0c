"""sesemi: semi-supervised image classification with PyTorch Lightning and Hydra.

The public plug-in API, importable as ``sesemi.<Name>`` and usable as ``_target_: sesemi.<Name>`` in configs.
Names are imported on first use, so ``import sesemi`` stays cheap for the CLI's start-up.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "1.0.0"  # the package's version (pyproject.toml reads it); above the unrelated sesemi 0.3.0 on PyPI

_EXPORTS = {
    # data
    "SemiSupervisedDataModule": "sesemi.data",
    "MultiView": "sesemi.data",
    "split_indices": "sesemi.data",
    "pipeline": "sesemi.data",
    "batch_pipeline": "sesemi.data",
    # loss heads
    "LossHead": "sesemi.losses",
    "StepContext": "sesemi.losses",
    "CrossEntropyHead": "sesemi.losses",
    "FixMatchHead": "sesemi.losses",
    "RotationHead": "sesemi.losses",
    "JointRotationHead": "sesemi.losses",
    "EntropyMinimizationHead": "sesemi.losses",
    "ConsistencyHead": "sesemi.losses",
    "PseudoLabelHead": "sesemi.losses",
    "JigsawHead": "sesemi.losses",
    "FlexMatchHead": "sesemi.losses",
    "FreeMatchHead": "sesemi.losses",
    "SimMatchHead": "sesemi.losses",
    "GraphContrastiveHead": "sesemi.losses",
    "SoftMatchHead": "sesemi.losses",
    # models
    "SmallCNN": "sesemi.models",
    "LinearHead": "sesemi.models",
    "MLPHead": "sesemi.models",
    # training
    "SemiSupervisedModule": "sesemi.module",
    "Classifier": "sesemi.module",
    "EMA": "sesemi.ema",
    "TensorBoardLogger": "sesemi.loggers",
    "load_checkpoint": "sesemi.checkpoints",
    "ConfigError": "sesemi.errors",
    "compose": "sesemi.composition",
    # inference
    "InferenceModel": "sesemi.inference",
    "predict_csv": "sesemi.predict",
    "pseudo_label_folder": "sesemi.inference",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'sesemi' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
