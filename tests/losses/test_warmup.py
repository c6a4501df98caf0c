"""Supervised warm-up (``start_step`` on a loss head): a head is off before it, its views are not forwarded and its
stream is not loaded; a run resumed inside or after the warm-up does the same; the LR schedule spans every step."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest
import torch
from pytorch_lightning import Trainer
from torch import Tensor, nn

from sesemi.data import SemiSupervisedDataModule, to_normalized_tensor
from sesemi.data.datamodule import DelayedLoader
from sesemi.datasets import Digits
from sesemi.losses import CrossEntropyHead, FixMatchHead
from sesemi.models import LinearHead, SmallCNN
from sesemi.module import SemiSupervisedModule

LABELED, UNLABELED, START = 8, 16, 3


def test_start_step_turns_a_head_off_until_then_and_its_ramp_up_counts_from_it():
    head = FixMatchHead(weight=2.0, start_step=10, rampup_steps=10, rampup="linear")
    assert [head.scale(s) for s in (0, 9, 10, 15, 20, 99)] == [0.0, 0.0, 0.0, 1.0, 2.0, 2.0]
    fraction = FixMatchHead(start_step=0.25)
    assert fraction.first_step(total_steps=200) == 50
    assert fraction.scale(49, total_steps=200) == 0.0 and fraction.scale(50, total_steps=200) == 1.0
    with pytest.raises(ValueError, match="start_step"):
        FixMatchHead(start_step=-1)


def test_delayed_loader_yields_none_for_the_skipped_batches_and_keeps_the_epoch_length():
    data = torch.arange(10)
    for skip, expected_none in ((0, 0), (3, 3), (50, 5)):
        loader = DelayedLoader(data, batch_size=2, skip_batches=lambda s=skip: s)
        batches = list(loader)
        assert len(batches) == len(loader) == 5
        assert [b is None for b in batches] == [True] * expected_none + [False] * (5 - expected_none)


class Recorder(nn.Module):
    """A backbone that records, per training step, the size of each batch it forwards."""

    def __init__(self) -> None:
        super().__init__()
        self.cnn = SmallCNN(width=4, stages=1)
        self.out_features = self.cnn.out_features
        self.step = 0
        self.sizes: dict[int, list[int]] = {}

    def forward(self, x: Tensor) -> Tensor:
        if self.training:
            self.sizes.setdefault(self.step, []).append(len(x))
        return self.cnn(x)


def _fit(tmp_path: Path, max_steps: int, ckpt: Path | None = None) -> tuple[dict[int, list[int]], list[int], Trainer]:
    """Train FixMatch with ``start_step=START`` for ``max_steps`` (from ``ckpt``): the backbone's batch sizes by step,
    and the global step at each unlabeled image loaded."""
    loaded_at: list[int] = []
    trainer: Trainer | None = None
    to_tensor = to_normalized_tensor([0.3], [0.4])

    def unlabeled_view(image):
        loaded_at.append(trainer.global_step)
        return to_tensor(image)

    data = SemiSupervisedDataModule(
        Digits(split="train"),
        Digits(split="test"),
        labeled_views={"weak": to_tensor},
        unlabeled_views={"weak": unlabeled_view, "strong": unlabeled_view},
        eval_transform=to_tensor,
        labels_per_class=4,
        labeled_batch_size=LABELED,
        unlabeled_batch_size=UNLABELED,
        num_workers=0,  # counts the loads in this process
    )
    backbone = Recorder()
    module = SemiSupervisedModule(
        backbone=backbone,
        head=partial(LinearHead),
        loss_heads={"supervised": CrossEntropyHead(), "fixmatch": FixMatchHead(threshold=0.0, start_step=START)},
        optimizer=partial(torch.optim.SGD, lr=0.1),
        lr_scheduler=partial(torch.optim.lr_scheduler.LambdaLR, lr_lambda=lambda s: 1.0 - s / 10),
        num_classes=10,
    )
    data.stream_start_steps = module.stream_start_steps(max_steps)  # as sesemi.train does
    module.on_train_batch_start = lambda batch, i: setattr(backbone, "step", module.global_step)
    trainer = Trainer(
        max_steps=max_steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        accelerator="cpu",
    )
    trainer.fit(module, datamodule=data, ckpt_path=ckpt)
    return backbone.sizes, loaded_at, trainer


def test_warm_up_steps_forward_and_load_only_the_labeled_batch(tmp_path: Path):
    sizes, loaded_at, trainer = _fit(tmp_path, max_steps=5)
    full = LABELED + 2 * UNLABELED  # labeled + weak + strong views in one concatenated forward
    assert sizes == {0: [LABELED], 1: [LABELED], 2: [LABELED], 3: [full], 4: [full]}
    # the first unlabeled batch is fetched one step ahead of its use (Lightning prefetches one batch), none earlier
    assert loaded_at and min(loaded_at) >= START - 1
    assert len(loaded_at) % (2 * UNLABELED) == 0 and len(loaded_at) <= 3 * 2 * UNLABELED
    # the LR schedule is stepped at every step, warm-up included: it spans the whole run
    assert trainer.lr_scheduler_configs[0].scheduler.last_epoch == 5


@pytest.mark.slow
@pytest.mark.parametrize("saved_at", [2, 4], ids=["inside-warm-up", "after-warm-up"])
def test_a_resumed_run_warms_up_only_for_the_steps_left_before_start_step(tmp_path: Path, saved_at: int):
    _, _, first = _fit(tmp_path, max_steps=saved_at)
    ckpt = tmp_path / "saved.ckpt"
    first.save_checkpoint(ckpt)
    sizes, loaded_at, trainer = _fit(tmp_path, max_steps=6, ckpt=ckpt)
    full = LABELED + 2 * UNLABELED
    assert sizes == {s: [LABELED] if s < START else [full] for s in range(saved_at, 6)}
    assert min(loaded_at) >= START - 1
    assert trainer.lr_scheduler_configs[0].scheduler.last_epoch == 6
