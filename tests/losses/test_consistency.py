"""ConsistencyHead (Pi-model, Mean Teacher) on hand-made tensors: 0 when views agree, gradients only to the student."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sesemi.ema import EMA
from sesemi.losses import ConsistencyHead, StepContext
from sesemi.module import Classifier


def _ctx(head: ConsistencyHead, weak: torch.Tensor, weak2: torch.Tensor, backbone=None, classifier=None, teacher=None):
    batch = {"unlabeled": {"weak": weak, "weak2": weak2}}
    return StepContext(
        batch, backbone or nn.Identity(), classifier or nn.Identity(), 0, list(head.views), teacher=teacher
    )


@pytest.mark.parametrize("divergence", ["mse", "kl"])
def test_pi_model_is_zero_when_views_agree(divergence: str):
    head = ConsistencyHead(mode="pi", divergence=divergence)
    logits = torch.randn(5, 3)
    assert head(_ctx(head, logits, logits.clone())).item() == pytest.approx(0.0, abs=1e-7)


@pytest.mark.parametrize("divergence", ["mse", "kl"])
def test_pi_model_gradient_flows_only_into_the_student_view(divergence: str):
    head = ConsistencyHead(mode="pi", divergence=divergence)
    assert head.views == (("unlabeled", "weak"), ("unlabeled", "weak2"))  # both in the joint student forward
    weak = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]], requires_grad=True)
    weak2 = torch.tensor([[0.0, 2.0, 0.0], [0.0, 0.0, 1.0]], requires_grad=True)
    loss = head(_ctx(head, weak, weak2))
    assert loss.item() > 0
    loss.backward()
    assert weak.grad is not None and weak.grad.abs().sum() > 0
    assert weak2.grad is None or not weak2.grad.any()


def test_divergences_match_their_definitions():
    student, target = torch.randn(4, 5), torch.randn(4, 5)
    p, q = torch.softmax(target, -1), torch.softmax(student, -1)
    mse = ConsistencyHead(mode="pi", divergence="mse")
    kl = ConsistencyHead(mode="pi", divergence="kl")
    assert torch.isclose(mse(_ctx(mse, student, target)), ((q - p) ** 2).mean())
    assert torch.isclose(kl(_ctx(kl, student, target)), (p * (p.log() - q.log())).sum(-1).mean(), atol=1e-6)


def _student() -> Classifier:
    torch.manual_seed(0)
    return Classifier(nn.Flatten(), nn.Linear(4, 3))


def test_mean_teacher_uses_the_ema_and_only_the_student_gets_gradients():
    student = _student()
    ema = EMA(student, decay=0.99)
    head = ConsistencyHead(mode="mean_teacher", divergence="mse")
    assert head.views == (("unlabeled", "weak"),)  # the teacher's view needs no student forward
    images = torch.randn(6, 4)

    # The EMA starts as a copy of the student: same images, same weights -> no inconsistency.
    loss = head(_ctx(head, images, images.clone(), student.backbone, student.head, ema.module))
    assert loss.item() == pytest.approx(0.0, abs=1e-8)

    with torch.no_grad():
        ema.module.head.weight.add_(torch.randn_like(ema.module.head.weight))
    loss = head(_ctx(head, images, images.clone(), student.backbone, student.head, ema.module))
    assert loss.item() > 1e-4  # changing only the EMA weights changed the loss
    loss.backward()
    assert student.head.weight.grad is not None and student.head.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in ema.parameters())


def test_mean_teacher_target_comes_from_the_teacher_view():
    student = _student()
    ema = EMA(student, decay=0.99)
    head = ConsistencyHead(mode="mean_teacher", views=("weak", "weak2"))
    images = torch.randn(6, 4)
    same = head(_ctx(head, images, images.clone(), student.backbone, student.head, ema.module))
    other = head(_ctx(head, images, images + 1.0, student.backbone, student.head, ema.module))
    assert same.item() == pytest.approx(0.0, abs=1e-8) and other.item() > 1e-4


def test_mean_teacher_without_ema_says_how_to_enable_it():
    head = ConsistencyHead(mode="mean_teacher")
    with pytest.raises(RuntimeError, match=r"ema\.decay"):
        head(_ctx(head, torch.randn(2, 3), torch.randn(2, 3)))


def test_invalid_settings_are_rejected():
    with pytest.raises(ValueError, match="mode"):
        ConsistencyHead(mode="vat")
    with pytest.raises(ValueError, match="divergence"):
        ConsistencyHead(divergence="l1")
    with pytest.raises(ValueError, match="two different views"):
        ConsistencyHead(mode="pi", views=("weak", "weak"))
