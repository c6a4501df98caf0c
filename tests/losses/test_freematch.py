"""FreeMatchHead: self-adaptive thresholds on hand-made probabilities, checkpointed state, DDP statistics."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

from sesemi.losses import FreeMatchHead, StepContext, self_adaptive_fairness


def _head(num_classes: int = 4, **kwargs) -> FreeMatchHead:
    head = FreeMatchHead(**kwargs)
    head.build(in_features=8, num_classes=num_classes)
    return head


def _confident(confidence: float, labels: list[int], num_classes: int = 4) -> torch.Tensor:
    """Probabilities with ``confidence`` on each label and the rest spread evenly."""
    rest = (1 - confidence) / (num_classes - 1)
    probs = torch.full((len(labels), num_classes), rest)
    probs[torch.arange(len(labels)), labels] = confidence
    return probs


def test_thresholds_start_at_one_over_c_and_rise_with_confidence():
    head = _head(momentum=0.9)
    assert head.global_threshold.item() == pytest.approx(0.25)
    assert torch.allclose(head.class_thresholds(), torch.full((4,), 0.25))
    previous = head.global_threshold.item()
    for confidence in [0.5] * 10 + [0.9] * 20 + [0.99] * 20:
        head.update(_confident(confidence, [0, 1, 2, 3]))
        current = head.global_threshold.item()
        assert current > previous
        assert current < confidence  # an EMA of the mean max-probability only approaches it
        previous = current
    assert previous > 0.9


def test_global_threshold_is_the_ema_of_mean_max_probability():
    head = _head(momentum=0.9)
    probs = _confident(0.7, [0, 0, 1, 2])
    head.update(probs)
    assert head.global_threshold.item() == pytest.approx(0.9 * 0.25 + 0.1 * 0.7)
    assert torch.allclose(head.class_probs, 0.9 * torch.full((4,), 0.25) + 0.1 * probs.mean(0))
    assert torch.allclose(head.label_hist, 0.9 * torch.full((4,), 0.25) + 0.1 * torch.tensor([0.5, 0.25, 0.25, 0.0]))


def test_rarely_predicted_classes_get_lower_local_thresholds():
    head = _head(momentum=0.5)
    for _ in range(5):
        head.update(_confident(0.9, [0, 0, 0, 1]))
    thresholds = head.class_thresholds()
    assert thresholds[0] == pytest.approx(head.global_threshold.item())  # MaxNorm: the top class gets tau itself
    assert thresholds[0] > thresholds[1] > thresholds[2]
    assert thresholds[2] == pytest.approx(thresholds[3].item())


def test_loss_masks_samples_below_their_class_threshold():
    head = _head(num_classes=2, momentum=0.0, fairness_weight=0.0)  # momentum 0: thresholds are this batch's stats
    weak = torch.tensor([[4.0, 0.0], [0.5, 0.0], [3.0, 0.0], [0.0, 0.2]])
    strong = torch.randn(4, 2, requires_grad=True)
    batch = {"unlabeled": {"weak": weak, "strong": strong}}
    ctx = StepContext(batch, nn.Identity(), nn.Identity(), 0, list(head.views))
    loss = head(ctx)
    probs = torch.softmax(weak, -1)
    confidence, labels = probs.max(-1)
    tau = confidence.mean()
    class_probs = probs.mean(0)
    mask = confidence >= tau * class_probs[labels] / class_probs.max()
    assert mask.tolist() == [True, False, True, True]  # class 1 is rare, so its 0.55 clears a lowered threshold
    expected = (F.cross_entropy(strong, labels, reduction="none") * mask).mean()
    assert torch.isclose(loss, expected)
    assert ctx.metrics["mask_ratio"].item() == pytest.approx(0.75)
    assert ctx.metrics["global_threshold"].item() == pytest.approx(tau.item())


def test_fairness_term_is_zero_without_confident_samples_and_differentiable_otherwise():
    # The confident rows (0, 1, 3, 5) predict two classes. Were all of them one class, the batch side would be that
    # class's one-hot whatever the logits, and the term rightly constant: random logits did that 1 time in 27.
    logits = torch.tensor(
        [[2.0, 0.1, -1.0], [0.3, 1.5, 0.2], [0.0, 0.0, 1.0], [1.0, 0.5, 0.0], [0.2, 0.1, 0.9], [-0.5, 2.0, 0.3]],
        requires_grad=True,
    )
    uniform = torch.full((3,), 1 / 3)
    empty = self_adaptive_fairness(logits, torch.zeros(6), uniform, uniform)
    assert empty.item() == 0.0
    empty.backward()
    assert torch.isfinite(logits.grad).all()
    logits.grad = None
    loss = self_adaptive_fairness(logits, torch.tensor([1.0, 1, 0, 1, 0, 1]), uniform, torch.tensor([0.5, 0.5, 0.0]))
    assert torch.isfinite(loss) and loss.item() != 0.0
    loss.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


def test_state_survives_state_dict_and_module_checkpoint_round_trip():
    from sesemi.models import LinearHead, SmallCNN
    from sesemi.module import SemiSupervisedModule

    head = _head(momentum=0.9)
    for confidence in (0.6, 0.8, 0.95):
        head.update(_confident(confidence, [0, 1, 1, 3]))
    restored = _head(momentum=0.9)
    restored.load_state_dict(head.state_dict())
    for name in ("global_threshold", "class_probs", "label_hist"):
        assert torch.equal(getattr(restored, name), getattr(head, name))
    assert torch.equal(restored.class_thresholds(), head.class_thresholds())

    def module(loss_head: FreeMatchHead) -> SemiSupervisedModule:
        return SemiSupervisedModule(
            backbone=SmallCNN(width=4, stages=1),
            head=partial(LinearHead),
            loss_heads={"freematch": loss_head},
            optimizer=partial(torch.optim.SGD, lr=0.1),
            num_classes=4,
        )

    trained = module(FreeMatchHead(momentum=0.9))
    trained.loss_heads["freematch"].update(_confident(0.9, [2, 2, 2, 2]))
    state = trained.state_dict()
    assert {"loss_heads.freematch.global_threshold", "loss_heads.freematch.class_probs"} <= set(state)
    fresh = module(FreeMatchHead(momentum=0.9))
    fresh.load_state_dict(state)
    assert torch.equal(fresh.loss_heads["freematch"].class_probs, trained.loss_heads["freematch"].class_probs)


def _ddp_worker(rank: int, init_file: str, probs: torch.Tensor, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        head = _head(momentum=0.5)
        head.update(probs.chunk(2)[rank])  # each rank sees half of the global batch
        torch.save(head.state_dict(), f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


def test_statistics_are_reduced_over_the_global_batch_under_ddp(tmp_path: Path):
    probs = torch.cat([_confident(0.9, [0, 0, 0]), _confident(0.4, [1, 2, 3])])  # ranks see different batches
    mp.spawn(_ddp_worker, args=(str(tmp_path / "init"), probs, str(tmp_path / "state")), nprocs=2)
    single = _head(momentum=0.5)
    single.update(probs)
    for rank in range(2):
        state = torch.load(tmp_path / f"state.{rank}")
        for name, value in single.state_dict().items():
            assert torch.allclose(state[name], value), (rank, name)
