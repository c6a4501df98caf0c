"""Diagnostics of a semi-supervised run: pseudo-label quality against known labels, and the confusion matrix picture."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def tag(name: str) -> str:
    """A class name as one component of a logged metric's name: every character but ASCII letters, digits and
    ``_ - . space`` becomes ``-`` (``T-shirt/top`` -> ``T-shirt-top``: a ``/`` would open a sub-group in TensorBoard,
    and MLflow refuses names with other characters)."""
    return "".join(c if c.isascii() and (c.isalnum() or c in "_-. ") else "-" for c in name)


def class_tags(names: Sequence[str]) -> list[str]:
    """:func:`tag` of each class name, made unique: a name whose tag an earlier class already has gets its class
    index appended (``a/b`` and ``a-b`` -> ``a-b``, ``a-b-1``), so no two classes share one curve."""
    tags: list[str] = []
    for index, name in enumerate(names):
        candidate = tag(str(name))
        tags.append(f"{candidate}-{index}" if candidate in tags else candidate)
    return tags


def _ratio(num: Tensor, den: Tensor) -> Tensor:
    """``num / den``, NaN where ``den`` is 0 (undefined, not 0: nothing was counted)."""
    return torch.where(den > 0, num / den.clamp_min(1), torch.full_like(num, float("nan")))


def pseudo_label_quality(labels: Tensor, mask: Tensor, truth: Tensor, num_classes: int) -> dict[str, Tensor]:
    """Precision and recall of the hard pseudo-labels a loss used, against the true labels (-1: unknown, ignored).

    - ``precision``: of the pseudo-labels the loss used (``mask > 0``), the share that is right;
    - ``recall``: of the images whose label is known, the share the loss used with the right label;
    - ``precision_per_class[c]``: of the pseudo-labels ``c`` that were used, the share that is right;
    - ``recall_per_class[c]``: of the images of true class ``c``, the share used with the right label.

    NaN where nothing was counted (e.g. no pseudo-label of class ``c`` passed the threshold). No host sync.
    """
    known = truth >= 0
    used = (mask > 0) & known
    correct = used & (labels == truth)
    by_label = F.one_hot(labels, num_classes).float()  # one_hot rather than bincount: deterministic on CUDA
    by_truth = F.one_hot(truth.clamp_min(0), num_classes).float()
    used_c = used.float() @ by_label
    correct_c = correct.float() @ by_label  # a right pseudo-label's class is its true class
    known_c = known.float() @ by_truth
    return {
        "precision": _ratio(correct_c.sum(), used_c.sum()),
        "recall": _ratio(correct_c.sum(), known_c.sum()),
        "precision_per_class": _ratio(correct_c, used_c),
        "recall_per_class": _ratio(correct_c, known_c),
    }


def per_class_accuracy(confusion: Tensor) -> Tensor:
    """Accuracy on each true class (rows of ``confusion``: true class, columns: prediction); NaN for an absent class."""
    confusion = confusion.float()
    return _ratio(confusion.diagonal(), confusion.sum(1))


# TensorBoard's image cards fit an image into the card (at least 335 px wide, 16 px padding each side) with
# nearest-neighbour scaling: an image wider than this is shrunk and its text lost, a smaller one is shown as it is.
CARD_WIDTH = 303


def confusion_matrix_image(confusion: Tensor, class_names: Sequence[str], width: int = CARD_WIDTH) -> Tensor:
    """A picture of a confusion matrix, ``uint8 [3, H, W]`` for ``SummaryWriter.add_image``, readable in a
    TensorBoard image card at its default size: at most ``width`` pixels wide while the cells can stay 10 px.

    Rows are true classes, named ``<index> <name>`` on the left; columns are predictions, headed by the class index.
    A cell's shade is its share of the row (the class's recall on the diagonal: blue; confusions: red), with the
    count where it fits. Drawn with Pillow (which torchvision needs anyway), so no plotting library is required.
    """
    from PIL import Image, ImageDraw, ImageFont

    confusion = confusion.detach().cpu().long()
    n = len(class_names)
    font = ImageFont.load_default(size=11)
    rows = [f"{k} {str(name)[:14]}" for k, name in enumerate(class_names)]
    label_w = max(int(font.getlength(s)) for s in rows) + 6
    cell = max(10, min(28, (width - label_w - 2) // max(n, 1)))
    top = 28  # the axis title and the column indices
    image = Image.new("RGB", (label_w + n * cell + 2, top + n * cell + 2), "white")
    draw = ImageDraw.Draw(image)
    share = (confusion.float() / confusion.sum(1, keepdim=True).clamp_min(1)).tolist()
    for i in range(n):
        for j in range(n):
            x, y = label_w + j * cell, top + i * cell
            level = int(255 * (1 - share[i][j]))
            fill = (level, level, 255) if i == j else (255, level, level)  # right: blue, confused: red
            draw.rectangle([x, y, x + cell - 1, y + cell - 1], fill=fill, outline=(220, 220, 220))
            count = str(int(confusion[i, j]))
            if font.getlength(count) <= cell - 2:
                colour = "white" if share[i][j] > 0.6 else "black"
                draw.text((x + cell / 2, y + cell / 2), count, fill=colour, font=font, anchor="mm")
    for k, row in enumerate(rows):
        draw.text((label_w - 4, top + k * cell + cell / 2), row, fill="black", font=font, anchor="rm")
        if font.getlength(str(k)) <= cell:
            draw.text((label_w + k * cell + cell / 2, top - 2), str(k), fill="black", font=font, anchor="md")
    draw.text((label_w, 1), "predicted", fill="gray", font=font)
    draw.text((2, 1), "true", fill="gray", font=font)
    pixels = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8).view(image.height, image.width, 3)
    return pixels.permute(2, 0, 1).contiguous()
