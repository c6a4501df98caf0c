"""EntropyMinimizationHead and prediction_entropy on hand-made logits."""

from __future__ import annotations

import math

import torch
from torch import nn

from sesemi.losses import EntropyMinimizationHead, StepContext, prediction_entropy


def test_entropy_is_zero_for_one_hot_and_log_c_for_uniform_predictions():
    one_hot = torch.tensor([[60.0, 0.0, 0.0, 0.0], [0.0, 0.0, 60.0, 0.0]])
    uniform = torch.zeros(3, 4)
    assert torch.allclose(prediction_entropy(one_hot), torch.zeros(2), atol=1e-6)
    assert torch.allclose(prediction_entropy(uniform), torch.full((3,), math.log(4)))


def test_head_is_the_mean_entropy_of_its_view_and_its_gradient_sharpens_predictions():
    logits = torch.tensor([[60.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0], [1.0, 0.5, 0.0, 0.0]], requires_grad=True)
    head = EntropyMinimizationHead(stream="unlabeled", view="weak")
    assert head.views == (("unlabeled", "weak"),)
    ctx = StepContext({"unlabeled": {"weak": logits}}, nn.Identity(), nn.Identity(), 0, list(head.views))
    loss = head(ctx)
    assert torch.isclose(loss, prediction_entropy(logits).mean())
    loss.backward()
    with torch.no_grad():  # one gradient step lowers the entropy of the non-confident sample
        stepped = logits - 0.5 * logits.grad
    assert prediction_entropy(stepped)[2] < prediction_entropy(logits.detach())[2]
