"""Inference: class predictions of a trained checkpoint for a folder of images or a dataset, written to CSV.

Usage (as for training, every option is a ``key=value`` override of the app's config, ``configs/predict.yaml``)::

    python -m sesemi.predict checkpoint=runs/fmnist_fixmatch/20250101_120000 images=/path/to/images
    python -m sesemi.predict checkpoint=runs/.../checkpoints/best.ckpt images=photos tta=flip probabilities=true \\
        output=photos.csv
    python -m sesemi.predict checkpoint=runs/.../best.ckpt dataset=test          # the run's own test split (if any)
    python -m sesemi.predict checkpoint=runs/.../best.ckpt \\
        'dataset={_target_:sesemi.datasets.FashionMNIST,root:/data/fashion-mnist,split:test}'

Everything about the model comes from the checkpoint: the network is rebuilt from the resolved training config that
:class:`~sesemi.module.SemiSupervisedModule` stores under ``"sesemi_config"``, loaded with the EMA weights when the
run evaluated with them (``weights=auto``; ``weights=ema|model`` to choose), and fed through the run's own eval
transform (``augment.eval``). ``tta=flip`` (image and mirror image) and ``tta=multicrop`` (centre plus four corner
crops of the edge-padded image, shifted by 1/8 of the side) average softmax probabilities over the views.

The CSV (default ``<checkpoint's run dir>/predictions/<YYYYmmdd_HHMMSS>.csv``) has one row per image: ``id`` (the
path relative to ``images``; for a dataset, the file's path relative to the dataset's root when it is read from
files, else the sample's index), ``label`` (class name), ``index`` (class index), ``score`` (its probability),
``target`` (the true class index; datasets with labels only) and with ``probabilities=true`` one ``prob_<class>``
column per class.

Why a Hydra app rather than argparse: the options are few and flat, so argparse would do, but users drive training
with Hydra overrides and should not learn a second grammar for the step after it; overrides also let ``dataset=``
take a whole dataset node (``_target_`` and arguments) exactly as a data config writes it, and a workspace's
``configs/predict.yaml`` can change the defaults. Hydra's run dir and log file are switched off
(``hydra.run.dir=.``, ``hydra.output_subdir=null``, logging to stdout), so a prediction writes only its CSV.
Prediction is a plain ``torch.no_grad`` loop rather than ``Trainer.predict``: one device, no callbacks or loggers,
and TTA is a few lines around the forward pass.

The Python API is :class:`sesemi.inference.InferenceModel` (load once, ``predict_proba`` any dataset of
``(image, target)`` samples) and :func:`predict_csv` (the command as a function); the parts live in
:mod:`sesemi.inference`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from sesemi.compat import hydra as hydra_compat
from sesemi.errors import ConfigError, exit_with
from sesemi.inference.inputs import dataset_input, image_folder
from sesemi.inference.model import InferenceModel
from sesemi.inference.predictions import Predictions, default_output, write_predictions


def _container(value: Any) -> Any:
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def predict_csv(
    checkpoint: str | os.PathLike,
    images: str | os.PathLike | None = None,
    dataset: str | Mapping[str, Any] | None = None,
    output: str | os.PathLike | None = None,
    tta: str = "none",
    probabilities: bool = False,
    weights: str = "auto",
    classes: Sequence[str] | None = None,
    mode: str | None = None,
    resize: int | Sequence[int] | None = None,
    batch_size: int = 256,
    num_workers: int | None = None,
    device: str | None = "auto",
    src_dir: str | None = "src",
) -> Predictions:
    """``python -m sesemi.predict`` as a function: predict ``images`` (a folder) or ``dataset`` and write the CSV."""
    if (images is None) == (dataset is None):
        raise ConfigError(
            "images",
            "give exactly one of images=<folder> and dataset=<test|val|train|node>",
            "e.g. images=/path/to/images",
        )
    inference = InferenceModel.from_checkpoint(
        checkpoint,
        weights=weights,
        classes=_container(classes),
        device=device,
        src_dir=src_dir,
    )
    targets = None
    if images is not None:
        data, ids = image_folder(images, mode or inference.image_mode)
    else:
        data, ids, targets = dataset_input(_container(dataset), inference.config)
    probs = inference.predict_proba(
        data,
        tta=tta,
        batch_size=batch_size,
        num_workers=num_workers,
        resize=_container(resize),
    )
    result = Predictions(ids=list(ids), probs=probs, classes=inference.classes, targets=targets)
    out = Path(os.path.expanduser(str(output))) if output else default_output(inference.checkpoint)
    result.path = write_predictions(out, result, probabilities=probabilities)
    return result


@hydra_compat.main(config_path="pkg://sesemi.configs", config_name="predict")
def main(cfg: DictConfig) -> None:
    options = OmegaConf.to_container(cfg, resolve=True)
    try:
        result = predict_csv(**options)
    except ConfigError as err:
        exit_with(err)
    accuracy = result.accuracy
    print(
        f"sesemi: wrote {len(result.ids)} predictions to {result.path}"
        + (f" (accuracy {accuracy:.4f})" if accuracy is not None else "")
    )


if __name__ == "__main__":
    os.environ.setdefault("HYDRA_FULL_ERROR", "0")
    main()
