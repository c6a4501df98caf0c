"""Diagnostics of a semi-supervised run: pseudo-label quality against known labels, and the confusion matrix picture."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def tag(name: str) -> str:
    """A class name as one TensorBoard tag component (``T-shirt/top`` would otherwise open a sub-group)."""
    return name.replace("/", "-")


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


def confusion_matrix_image(confusion: Tensor, class_names: Sequence[str], cell: int = 0) -> Tensor:
    """A picture of a confusion matrix, ``uint8 [3, H, W]`` for ``SummaryWriter.add_image``.

    Rows are true classes, columns predictions, each named; a cell's shade is its share of the row (the class's
    recall on the diagonal) and, when cells are large enough, it shows the count. Drawn with Pillow (which
    torchvision needs anyway), so no plotting library is required.
    """
    from PIL import Image, ImageDraw, ImageFont

    confusion = confusion.detach().cpu().long()
    n = len(class_names)
    cell = cell or max(8, min(44, 640 // max(n, 1)))
    font = ImageFont.load_default()
    names = [str(c) for c in class_names]
    label_w = max(int(font.getlength(s)) for s in names) + 8
    margin = label_w + 14  # room for the class names and the axis titles
    size = margin + n * cell + 4
    image = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(image)
    rows = confusion.sum(1, keepdim=True).clamp_min(1)
    share = (confusion.float() / rows).tolist()
    for i in range(n):
        for j in range(n):
            x, y = margin + j * cell, margin + i * cell
            level = int(255 * (1 - share[i][j]))
            fill = (level, level, 255) if i == j else (255, level, level)  # right: blue, confused: red
            draw.rectangle([x, y, x + cell - 1, y + cell - 1], fill=fill, outline=(220, 220, 220))
            if cell >= 28:
                text = str(int(confusion[i, j]))
                colour = "white" if share[i][j] > 0.6 else "black"
                draw.text((x + cell / 2, y + cell / 2), text, fill=colour, font=font, anchor="mm")
    for k, name in enumerate(names):  # true classes down the left; predictions up the top, written vertically
        draw.text((margin - 4, margin + k * cell + cell / 2), name, fill="black", font=font, anchor="rm")
        column = Image.new("RGB", (label_w, cell), "white")
        ImageDraw.Draw(column).text((label_w - 4, cell / 2), name, fill="black", font=font, anchor="rm")
        image.paste(column.rotate(-90, expand=True), (margin + k * cell, margin - label_w))
    draw.text((2, margin - 12), "true", fill="gray", font=font)
    draw.text((margin, 2), "predicted", fill="gray", font=font)
    pixels = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8).view(size, size, 3)
    return pixels.permute(2, 0, 1).contiguous()
