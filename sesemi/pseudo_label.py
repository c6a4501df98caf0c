"""``python -m sesemi.pseudo_label``: the data step of a Noisy-Student loop. A trained teacher labels a folder of
unlabeled images and the confidently predicted ones become a labeled dataset for the next student. The work is done
by :func:`sesemi.inference.noisy_student.pseudo_label_folder`; this module is the command (not to be confused with
the Pseudo-Label loss head, :mod:`sesemi.losses.pseudo_label`).

Usage (a Hydra app like ``sesemi.predict``; options in ``configs/pseudo_label.yaml``)::

    python -m sesemi.pseudo_label checkpoint=runs/fmnist_fixmatch/20250101_120000 images=/data/unlabeled \\
        output=/data/pseudo threshold=0.9
    # options: max_per_class=5000 (keep the most confident per class), link=copy|hardlink, tta=flip, weights=model

``output`` (new or empty) then holds ``<class>/<image path relative to images>`` for every image whose top
probability is ``>= threshold`` -- symlinks to the originals by default (no copies of a large unlabeled set; use
``link=copy`` when the originals may move) -- plus ``pseudo_labels.csv`` (``id`` relative to ``images``, ``label``,
``index``, ``score``, ``path`` relative to ``output``) and ``classes.txt`` (the class folders in class-index order).
Every class gets a folder, empty when nothing was kept, so the class count stays the teacher's (the printed node
then says ``allow_empty_classes:true``, as ImageFolder refuses an empty class folder otherwise). Class folders are
the class names, with ``/`` replaced by ``_``.

It is an ordinary :class:`sesemi.datasets.ImageFolder`, so any data config takes it as training data by swapping
its ``train`` dataset (validation and test stay the teacher's). With the embedded digits, as the tests do::

    python -m sesemi.train data=digits augment=digits method=supervised '~data.train' \\
        '+data.train={_target_:sesemi.datasets.ImageFolder,root:/data/pseudo,mode:L}' data.labels_per_class=null

or, for photos, ``python -m sesemi.train data=image_folder data.train.root=/data/pseudo data.val.root=/data/val``.
The command printed at the end is the exact override for the folder just written:

- ``mode:L`` for a grayscale (1-channel) teacher, ``mode:RGB`` otherwise.
- ``data.labels_per_class=null`` trains on every pseudo-label instead of sampling a labeled subset.
- ImageFolder orders classes by folder name; when that differs from the teacher's order (Fashion-MNIST's
  "T-shirt_top", "Trouser", ...), the node gets ``classes:[...]`` (classes.txt) so class indices keep matching the
  teacher's validation and test data.
- A data config that holds validation out of train (``val_per_class``, e.g. fashion_mnist) needs
  ``data.val_per_class=null`` and a ``data.val=...`` dataset instead: pseudo-labels are not ground truth.
- With every training image labeled the unlabeled stream is empty: train the student with ``method=supervised``, or
  keep a semi-supervised method and give it the unlabeled images, e.g.
  ``'data.extra_unlabeled=[{_target_:sesemi.datasets.UnlabeledImages,root:/data/unlabeled,mode:L}]'``.
"""

from __future__ import annotations

import os
import shlex

from omegaconf import DictConfig, OmegaConf

from sesemi.compat import hydra as hydra_compat
from sesemi.errors import ConfigError, exit_with
from sesemi.inference.noisy_student import pseudo_label_folder


@hydra_compat.main(config_path="pkg://sesemi.configs", config_name="pseudo_label")
def main(cfg: DictConfig) -> None:
    options = OmegaConf.to_container(cfg, resolve=True)
    try:
        result = pseudo_label_folder(**options)
    except ConfigError as err:
        exit_with(err)
    counts = ", ".join(f"{name}: {n}" for name, n in zip(result.classes, result.per_class))
    print(
        f"sesemi: kept {result.kept} of {result.total} images (threshold {options['threshold']}) in "
        f"{result.output} ({counts})"
    )
    print(
        "sesemi: train a student on them with:\n  python -m sesemi.train <your data/experiment overrides> "
        + " ".join(shlex.quote(o) for o in result.train_overrides())
    )


if __name__ == "__main__":
    os.environ.setdefault("HYDRA_FULL_ERROR", "0")
    main()
