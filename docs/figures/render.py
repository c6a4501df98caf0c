"""Render the diagnostics pictures of docs/methods.md from a run's TensorBoard event file (needs matplotlib).

    python docs/figures/render.py <run dir> docs/figures

Writes ``diagnostics.png`` (pseudo-label quality, mask ratio and accuracy; per-class pseudo-label recall; FreeMatch's
class thresholds; per-class validation accuracy) and ``confusion_matrix.png`` (the last validation's image, as
logged). Curves are smoothed like TensorBoard's default (EMA 0.6); the raw points are drawn faintly.
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def smooth(values: list[float], weight: float = 0.6) -> list[float]:
    out, last = [], values[0] if values else 0.0
    for v in values:
        last = weight * last + (1 - weight) * v
        out.append(last)
    return out


def plot(ax, events: EventAccumulator, tags: list[str], label=lambda t: t, raw: bool = True) -> None:
    for t in tags:
        points = events.Scalars(t)
        steps, values = [p.step for p in points], [p.value for p in points]
        (line,) = ax.plot(steps, smooth(values), label=label(t), linewidth=1.4)
        if raw:
            ax.plot(steps, values, color=line.get_color(), alpha=0.2, linewidth=0.8)
    ax.grid(alpha=0.3)
    ax.set_xlabel("step")


def main(run_dir: Path, out: Path) -> None:
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "images": 0}).Reload()
    tags = events.Tags()["scalars"]
    head = next(t.split("/")[1] for t in tags if t.endswith("/pl_precision"))

    def per_class(prefix: str) -> list[str]:
        return sorted(t for t in tags if t.startswith(prefix + "/"))

    fig, axes = plt.subplots(2, 2, figsize=(12, 8.5))
    ax = axes[0, 0]
    plot(ax, events, [f"train/{head}/pl_precision", f"train/{head}/pl_recall", f"train/{head}/mask_ratio"])
    plot(ax, events, ["val/acc"], raw=False)
    ax.set_title(f"{head}: pseudo-label precision, recall, mask ratio; val/acc")
    ax.set_ylim(0, 1.03)  # the mask ratio is often exactly 1
    ax.legend(fontsize=8)
    for ax, prefix, title in (
        (axes[0, 1], f"{head}_pl_recall", f"{head}_pl_recall/<class>: share of each class used and right"),
        (axes[1, 0], f"{head}_threshold", f"{head}_threshold/<class>: class-wise thresholds"),
        (axes[1, 1], "val_class_acc", "val_class_acc/<class>: validation accuracy per class"),
    ):
        plot(ax, events, per_class(prefix), label=lambda t: t.split("/", 1)[1], raw=False)
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    out.mkdir(parents=True, exist_ok=True)
    fig.savefig(out / "diagnostics.png", dpi=80)
    (out / "confusion_matrix.png").write_bytes(events.Images("val/confusion_matrix")[-1].encoded_image_string)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
