"""PseudoLabelHead on hand-made logits: confident samples are their own hard targets, the rest are masked."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sesemi.losses import PseudoLabelHead, StepContext


def _run(head: PseudoLabelHead, logits: torch.Tensor) -> tuple[torch.Tensor, StepContext]:
    ctx = StepContext({"unlabeled": {"weak": logits}}, nn.Identity(), nn.Identity(), 0, list(head.views))
    return head(ctx), ctx


def test_below_threshold_samples_are_masked_and_targets_are_detached():
    logits = torch.tensor([[10.0, 0.0], [0.2, 0.0], [0.0, 8.0]], requires_grad=True)
    loss, ctx = _run(PseudoLabelHead(threshold=0.95), logits)
    expected = (F.cross_entropy(logits[0], torch.tensor(0)) + F.cross_entropy(logits[2], torch.tensor(1))) / 3
    assert torch.isclose(loss, expected)
    assert ctx.metrics["mask_ratio"].item() == pytest.approx(2 / 3)
    loss.backward()
    # The masked sample gets no gradient; the others get exactly d CE / d logits with a constant target.
    assert torch.equal(logits.grad[1], torch.zeros(2))
    probs = torch.softmax(logits.detach(), -1)
    assert torch.allclose(logits.grad[0], (probs[0] - torch.tensor([1.0, 0.0])) / 3)
    assert torch.allclose(logits.grad[2], (probs[2] - torch.tensor([0.0, 1.0])) / 3)


def test_threshold_zero_uses_every_argmax_as_in_lee_2013():
    logits = torch.tensor([[0.2, 0.0], [0.0, 0.1]])
    loss, ctx = _run(PseudoLabelHead(threshold=0.0), logits)
    assert ctx.metrics["mask_ratio"].item() == 1.0
    assert torch.isclose(loss, F.cross_entropy(logits, torch.tensor([0, 1])))


def test_nothing_confident_gives_zero_loss():
    loss, _ = _run(PseudoLabelHead(threshold=0.95), torch.zeros(4, 3))
    assert loss.item() == 0.0
