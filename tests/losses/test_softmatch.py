"""SoftMatchHead: the truncated-Gaussian sample weights and their EMA statistics against the paper's formula, on
hand-made confidences; checkpointed state, reduced over the global batch under DDP."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

from sesemi.losses import SoftMatchHead, StepContext


def _head(num_classes: int = 4, **kwargs) -> SoftMatchHead:
    head = SoftMatchHead(**kwargs)
    head.build(in_features=8, num_classes=num_classes)
    return head


def test_statistics_start_at_one_over_c_and_one_and_follow_the_batch_mean_and_unbiased_variance():
    head = _head(momentum=0.5)
    assert head.confidence_mean.item() == pytest.approx(0.25) and head.confidence_var.item() == 1.0
    head.update(torch.tensor([0.9, 0.5, 0.7]))
    # batch mean 0.7, unbiased variance (0.2^2 + 0.2^2 + 0) / 2 = 0.04
    assert head.confidence_mean.item() == pytest.approx(0.5 * 0.25 + 0.5 * 0.7)
    assert head.confidence_var.item() == pytest.approx(0.5 * 1.0 + 0.5 * 0.04)


@pytest.mark.parametrize("n_sigma", [1.0, 2.0])
def test_weights_are_a_truncated_gaussian_of_the_confidence(n_sigma: float):
    head = _head(n_sigma=n_sigma)
    head.confidence_mean.fill_(0.6)
    head.confidence_var.fill_(0.05)
    weights = head.sample_weights(torch.tensor([0.9, 0.6, 0.4, 0.1]))
    sigma2 = 0.05 / n_sigma**2  # the paper's sigma_t^2 when n_sigma = 1
    expected = [1.0, 1.0, math.exp(-(0.2**2) / (2 * sigma2)), math.exp(-(0.5**2) / (2 * sigma2))]
    assert weights.tolist() == pytest.approx(expected, rel=1e-5)


def test_loss_is_the_weighted_cross_entropy_of_the_strong_view_on_the_weak_argmax():
    head = _head(num_classes=2, momentum=0.0, n_sigma=1.0, distribution_alignment=False)
    weak = torch.tensor([[2.0, 0.0], [0.0, 0.5], [1.0, 0.0]])  # "features" are the logits themselves
    strong = torch.tensor([[0.0, 1.0], [0.3, 0.0], [0.5, 0.5]])
    batch = {"unlabeled": {"weak": weak, "strong": strong}}
    ctx = StepContext(batch, nn.Identity(), nn.Identity(), 0, list(head.views))
    loss = head(ctx)
    confidence = torch.softmax(weak, -1).max(-1).values
    mean, var = confidence.mean(), confidence.var(unbiased=True)  # momentum 0: this batch's statistics
    assert head.confidence_mean.item() == pytest.approx(mean.item())
    assert head.confidence_var.item() == pytest.approx(var.item())
    weights = torch.exp(-((confidence - mean).clamp_max(0) ** 2) / (2 * var))
    expected = (F.cross_entropy(strong, torch.tensor([0, 1, 0]), reduction="none") * weights).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert ctx.pseudo_labels[""].labels.tolist() == [0, 1, 0]


def test_uniform_alignment_is_on_by_default_and_the_state_is_checkpointed():
    head = _head(momentum=0.9)
    assert head.alignment is not None
    head.update(torch.tensor([0.8, 0.4]))
    head.alignment(torch.softmax(torch.randn(5, 4), -1))
    restored = _head(momentum=0.9)
    restored.load_state_dict(head.state_dict())
    for name, value in head.state_dict().items():
        assert torch.equal(restored.state_dict()[name], value), name
    assert {"confidence_mean", "confidence_var", "alignment.p_model"} <= set(head.state_dict())


def _ddp_worker(rank: int, init_file: str, probs: torch.Tensor, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        head = _head(momentum=0.5)
        aligned = head.alignment(probs.chunk(2)[rank])  # each rank sees half of the global batch
        head.update(aligned.max(-1).values)
        torch.save(head.state_dict(), f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_statistics_and_alignment_are_reduced_over_the_global_batch_under_ddp(tmp_path: Path):
    probs = torch.softmax(torch.tensor([[4.0, 0, 0, 0], [3, 1, 0, 0], [0, 0, 2, 0], [0, 1, 0, 0]]), -1)
    mp.spawn(_ddp_worker, args=(str(tmp_path / "init"), probs, str(tmp_path / "state")), nprocs=2)
    single = _head(momentum=0.5)
    single.update(single.alignment(probs).max(-1).values)
    for rank in range(2):
        state = torch.load(tmp_path / f"state.{rank}")
        for name, value in single.state_dict().items():
            assert torch.allclose(state[name], value), (rank, name)
