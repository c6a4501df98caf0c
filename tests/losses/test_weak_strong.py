"""What FixMatch, FreeMatch and SoftMatch share: pseudo-labels from the EMA teacher, and uniform distribution
alignment, checked against their formulas on hand-made probabilities."""

from __future__ import annotations

from functools import partial

import pytest
import torch
from torch import Tensor, nn

from sesemi.losses import DistributionAlignment, FixMatchHead, FreeMatchHead, SoftMatchHead, StepContext
from sesemi.models import LinearHead, SmallCNN
from sesemi.module import SemiSupervisedModule


def test_uniform_alignment_divides_by_the_ema_of_the_mean_prediction_and_renormalises():
    align = DistributionAlignment(num_classes=2, momentum=0.5)
    first = torch.tensor([[0.8, 0.2], [0.6, 0.4]])
    out = align(first)
    # p_model starts at the first batch's mean (0.7, 0.3); p * (1/2) / p_model, renormalised
    assert torch.allclose(align.p_model, torch.tensor([0.7, 0.3]))
    expected = first / torch.tensor([0.7, 0.3])
    assert torch.allclose(out, expected / expected.sum(1, keepdim=True), atol=1e-5)
    out = align(torch.tensor([[0.5, 0.5]]))
    # p_model = 0.5 * (0.7, 0.3) + 0.5 * (0.5, 0.5) = (0.6, 0.4); (0.5/0.6, 0.5/0.4) renormalised = (0.4, 0.6)
    assert torch.allclose(align.p_model, torch.tensor([0.6, 0.4]))
    assert torch.allclose(out, torch.tensor([[0.4, 0.6]]), atol=1e-5)
    restored = DistributionAlignment(num_classes=2, momentum=0.5)
    restored.load_state_dict(align.state_dict())  # checkpointed: p_model and whether it has started
    assert torch.equal(restored.p_model, align.p_model) and bool(restored.started)


@pytest.mark.parametrize("head_class", [FixMatchHead, FreeMatchHead, SoftMatchHead])
def test_distribution_alignment_is_a_switch_of_every_weak_strong_head(head_class):
    head = head_class(distribution_alignment=True)
    head.build(in_features=2, num_classes=2)
    assert isinstance(head.alignment, DistributionAlignment)
    assert "alignment.p_model" in head.state_dict()
    off = head_class(distribution_alignment=False)
    off.build(in_features=2, num_classes=2)
    assert off.alignment is None


class Counting(nn.Module):
    """A "backbone" (identity by default: the images are the logits) recording the batch sizes it forwards and
    whether autograd was on."""

    def __init__(self, net: nn.Module | None = None) -> None:
        super().__init__()
        self.net = net or nn.Identity()
        self.sizes: list[int] = []
        self.grad_modes: list[bool] = []

    def forward(self, x: Tensor) -> Tensor:
        self.sizes.append(len(x))
        self.grad_modes.append(torch.is_grad_enabled())
        return self.net(x)


class Flip(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x.flip(-1)


@pytest.mark.parametrize("head_class", [FixMatchHead, FreeMatchHead, SoftMatchHead])
def test_teacher_pseudo_labels_come_from_the_teacher_and_the_student_skips_the_weak_view(head_class):
    head = head_class(pseudo_labels_from="teacher", distribution_alignment=False)
    head.build(in_features=2, num_classes=2)
    assert head.views == (("unlabeled", "strong"),) and head.teacher_views == (("unlabeled", "weak"),)
    weak = torch.tensor([[9.0, 0.0], [0.0, 9.0]])
    strong = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    student = Counting()
    teacher = nn.Module()
    teacher.backbone, teacher.head = Flip(), nn.Identity()  # the teacher predicts the other class than the student
    ctx = StepContext(
        {"unlabeled": {"weak": weak, "strong": strong}}, student, nn.Identity(), 0, list(head.views), teacher=teacher
    )
    head(ctx)
    assert ctx.pseudo_labels[""].labels.tolist() == [1, 0]  # the teacher's argmax, not the student's
    assert student.sizes == [2]  # the student forwarded the strong view only


def test_teacher_pseudo_labels_without_an_ema_teacher_fail_when_the_module_is_built():
    with pytest.raises(ValueError, match=r"method\.ema\.decay"):
        SemiSupervisedModule(
            backbone=SmallCNN(width=4, stages=1),
            head=partial(LinearHead),
            loss_heads={"fixmatch": FixMatchHead(pseudo_labels_from="teacher")},
            optimizer=partial(torch.optim.SGD, lr=0.1),
            num_classes=2,
        )
    with pytest.raises(ValueError, match="pseudo_labels_from"):
        FixMatchHead(pseudo_labels_from="ema")


@pytest.mark.parametrize("head_class", [FixMatchHead, FreeMatchHead, SoftMatchHead])
def test_a_separate_weak_forward_takes_the_same_pseudo_labels_without_autograd(head_class):
    """The weak view goes through the student on its own, with no graph; the strong view keeps its gradient; the
    loss and pseudo-labels are those of the joint forward (here the network has no batch statistics)."""
    torch.manual_seed(0)
    weak, strong = torch.randn(6, 3), torch.randn(6, 3)
    net = nn.Linear(3, 3)
    results = []
    for separate in (False, True):
        head = head_class(separate_weak_forward=separate)
        head.build(in_features=3, num_classes=3)
        student = Counting(net)
        ctx = StepContext(
            {"unlabeled": {"weak": weak, "strong": strong}},
            student,
            nn.Identity(),
            0,
            list(head.views),
            detached_views=list(head.detached_views),
        )
        loss = head(ctx)
        results.append((loss, ctx.pseudo_labels[""].labels, student.sizes, student.grad_modes))
    (joint_loss, joint_labels, joint_sizes, _), (loss, labels, sizes, grad_modes) = results
    assert joint_sizes == [12] and sizes == [6, 6]
    assert grad_modes == [True, False] or grad_modes == [False, True]
    assert torch.equal(labels, joint_labels) and torch.allclose(loss, joint_loss)
    assert loss.requires_grad
