"""sesemi.losses.base: what StepContext offers a new method (teacher features, sample indices and the cross-rank sum,
enough for a SimMatch/CoMatch-style memory-bank head in one small class), and the ramp-ups of a head's weight."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sesemi.ema import EMA
from sesemi.losses import FixMatchHead, LossHead, StepContext, sigmoid_rampup, sum_across_ranks
from sesemi.module import Classifier


class TeacherBankHead(LossHead):
    """Keeps the teacher's normalised features of every unlabeled sample it saw, by index (as SimMatch's bank), and
    pulls the student's strong-view features toward them."""

    views = (("unlabeled", "strong"),)

    def __init__(self, pool_size: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.pool_size = pool_size

    def build(self, in_features: int, num_classes: int) -> None:
        self.register_buffer("bank", torch.zeros(self.pool_size, in_features))

    def forward(self, ctx: StepContext) -> Tensor:
        target = F.normalize(ctx.teacher_features("unlabeled", "weak"), dim=1)
        self.bank[ctx.indices()] = target
        ctx.log("bank_filled", sum_across_ranks((self.bank.abs().sum(1) > 0).sum()))
        student = F.normalize(ctx.features("unlabeled", "strong"), dim=1)
        return (1 - (student * self.bank[ctx.indices()]).sum(1)).mean()


def test_a_memory_bank_head_reads_teacher_features_by_sample_index():
    torch.manual_seed(0)
    student = Classifier(nn.Linear(4, 3), nn.Linear(3, 2))
    teacher = EMA(student, decay=0.9).module
    head = TeacherBankHead(pool_size=10)
    head.build(3, 2)
    weak, strong = torch.randn(4, 4), torch.randn(4, 4)
    index = torch.tensor([7, 1, 3, 8])
    batch = {"unlabeled": {"weak": weak, "strong": strong, "index": index}}
    ctx = StepContext(batch, student.backbone, student.head, 0, list(head.views), teacher=teacher)
    loss = head(ctx)
    with torch.no_grad():
        expected = F.normalize(teacher.backbone(weak), dim=1)
    assert torch.allclose(head.bank[index], expected)
    assert head.bank[[0, 2, 4, 5, 6, 9]].abs().sum() == 0
    assert ctx.metrics["bank_filled"].item() == 4  # sum_across_ranks is the identity in a single process
    loss.backward()
    assert student.backbone.weight.grad is not None
    assert all(p.grad is None for p in teacher.parameters())  # the teacher's features carry no gradient


def test_rampup_as_a_fraction_follows_the_run_length():
    head = FixMatchHead(weight=2.0, rampup_steps=0.5, rampup="linear")
    assert head.scale(50, total_steps=200) == 2.0 * 50 / 100
    assert head.scale(100, total_steps=200) == 2.0
    assert FixMatchHead(rampup_steps=40, rampup="linear").scale(10, total_steps=200) == 0.25


def test_sigmoid_rampup_reaches_one():
    assert sigmoid_rampup(0, 100) < 0.01
    assert sigmoid_rampup(100, 100) == 1.0
