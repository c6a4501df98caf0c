"""FlexMatchHead: curriculum thresholds against the paper's equations and the authors' counting, the step's mask and
update order, checkpointed per-sample state, DDP."""

from __future__ import annotations

from collections import Counter
from functools import partial
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

from sesemi import ConfigError
from sesemi.losses import FlexMatchHead, StepContext, curriculum_thresholds


def _head(num_classes: int = 3, pool_size: int | None = 10, **kwargs) -> FlexMatchHead:
    head = FlexMatchHead(**kwargs)
    head.build(in_features=8, num_classes=num_classes)
    if pool_size is not None:
        head.on_fit_start(pool_size)
    return head


def test_thresholds_follow_the_papers_equations():
    # N = 10 samples, C = 3: u = three 0s, one 1, six unused -> sigma = (3, 1, 0), N - sum sigma = 6
    pool = torch.tensor([0, 0, 0, 1, -1, -1, -1, -1, -1, -1])
    tau = 0.95
    warm = [3 / 6, 1 / 6, 0.0]  # Eq. 11: sigma / max(max sigma, N - sum sigma)
    cold = [3 / 3, 1 / 3, 0.0]  # Eq. 7: sigma / max sigma
    for beta, warmup in ((warm, True), (cold, False)):
        expected = {
            "convex": [tau * b / (2 - b) for b in beta],  # Eq. 12
            "linear": [tau * b for b in beta],
            "concave": [tau * torch.log2(torch.tensor(b + 1.0)).item() for b in beta],
        }
        for mapping, values in expected.items():
            got = curriculum_thresholds(pool, 3, tau, warmup=warmup, mapping=mapping)
            assert got.tolist() == pytest.approx(values), (warmup, mapping)


def _authors_thresholds(selected: list[int], num_classes: int, tau: float, warmup: bool) -> list[float]:
    """The authors' counting (FlexMatch / USB ``FlexMatchThresholdingHook``) with the convex mapping, written out."""
    counter = Counter(selected)
    acc = [0.0] * num_classes
    if max(counter.values()) < len(selected):  # not all unused
        if warmup:
            acc = [counter[c] / max(counter.values()) for c in range(num_classes)]
        else:
            used = {k: v for k, v in counter.items() if k != -1}
            acc = [counter[c] / max(used.values()) for c in range(num_classes)]
    return [tau * a / (2 - a) for a in acc]


@pytest.mark.parametrize("warmup", [True, False])
def test_thresholds_match_the_authors_counting_on_random_pools(warmup: bool):
    generator = torch.Generator().manual_seed(0)
    for used in (0.0, 0.1, 0.5, 0.9, 1.0):
        pool = torch.randint(0, 5, (200,), generator=generator)
        pool[torch.rand(200, generator=generator) >= used] = -1
        got = curriculum_thresholds(pool, 5, 0.95, warmup=warmup)
        assert got.tolist() == pytest.approx(_authors_thresholds(pool.tolist(), 5, 0.95, warmup)), used


def _step(head: FlexMatchHead, weak: torch.Tensor, indices: list[int], strong: torch.Tensor | None = None):
    strong = torch.randn(len(weak), weak.shape[1], requires_grad=True) if strong is None else strong
    batch = {"unlabeled": {"weak": weak, "strong": strong, "index": torch.tensor(indices)}}
    ctx = StepContext(batch, nn.Identity(), nn.Identity(), 0, list(head.views), log=lambda *_: None)
    return head(ctx), ctx, strong


def test_a_step_masks_with_the_thresholds_before_it_then_records_its_confident_predictions():
    head = _head(num_classes=3, pool_size=6)
    assert head.class_thresholds().tolist() == [0.0, 0.0, 0.0]  # nothing learnt yet: every pseudo-label is used
    weak = torch.tensor([[6.0, 0, 0], [0.0, 6, 0], [0.2, 0.1, 0]])  # 0.995, 0.995 and 0.37 confident
    loss, ctx, strong = _step(head, weak, [0, 1, 2])
    labels = weak.argmax(-1)
    assert torch.isclose(loss, F.cross_entropy(strong, labels))  # mask all ones: the thresholds before the step
    assert ctx.metrics["mask_ratio"].item() == 1.0
    assert head.pool_predictions.tolist() == [0, 1, -1, -1, -1, -1]  # only the confident two are recorded
    # sigma = (1, 1, 0), unused 4 -> beta = (1/4, 1/4, 0), T = 0.95 * (1/7, 1/7, 0)
    assert head.class_thresholds().tolist() == pytest.approx([0.95 / 7, 0.95 / 7, 0.0])
    assert ctx.class_metrics["threshold"].tolist() == [0.0, 0.0, 0.0]  # the thresholds the step used

    weak = torch.tensor([[0.0, 0.1, 0], [0.0, 0.0, 6], [0.1, 0, 0]])  # 0.36 on class 1, 0.995 on 2, 0.36 on 0
    loss, ctx, strong = _step(head, weak, [0, 3, 4])
    mask = torch.tensor([1.0, 1.0, 1.0])  # 0.36 >= 0.136 for classes 0 and 1; class 2's threshold is 0
    assert torch.isclose(loss, (F.cross_entropy(strong, weak.argmax(-1), reduction="none") * mask).mean())
    # sample 0 keeps its earlier confident prediction (0): an unconfident one does not erase it; 3 becomes class 2
    assert head.pool_predictions.tolist() == [0, 1, -1, 2, -1, -1]

    weak = torch.tensor([[0.5, 0, 0], [0.0, 0, 0.5]])  # 0.45 on class 0, 0.45 on class 2
    head.pool_predictions.copy_(torch.tensor([0, 0, 0, 0, 2, 1]))  # sigma (4, 1, 1): class 0 learnt best
    thresholds = head.class_thresholds()  # 0.95, 0.95 * (1/4) / (7/4) = 0.136 for classes 1 and 2
    loss, ctx, strong = _step(head, weak, [4, 5])
    assert thresholds[0] == pytest.approx(0.95)
    assert ctx.metrics["mask_ratio"].item() == 0.5  # class 0's 0.45 is below 0.95, class 2's clears 0.136
    assert torch.isclose(loss, F.cross_entropy(strong[1:], weak[1:].argmax(-1)) / 2)
    loss.backward()
    assert strong.grad[0].abs().sum() == 0 and strong.grad[1].abs().sum() > 0


def test_pool_state_survives_a_module_checkpoint_and_starts_afresh_for_another_pool():
    from sesemi.models import LinearHead, SmallCNN
    from sesemi.module import SemiSupervisedModule

    def module() -> SemiSupervisedModule:
        return SemiSupervisedModule(
            backbone=SmallCNN(width=4, stages=1),
            head=partial(LinearHead),
            loss_heads={"flexmatch": FlexMatchHead()},
            optimizer=partial(torch.optim.SGD, lr=0.1),
            num_classes=3,
        )

    trained = module()
    head = trained.loss_heads["flexmatch"]
    head.on_fit_start(7)
    head.update(torch.tensor([1, 5]), torch.tensor([0.99, 0.97]), torch.tensor([2, 1]))
    state = trained.state_dict()
    fresh = module()  # an empty pool until training starts: the checkpoint's size is taken on load
    fresh.load_state_dict(state)
    restored = fresh.loss_heads["flexmatch"]
    assert restored.pool_predictions.tolist() == [-1, 2, -1, -1, -1, 1, -1]
    restored.on_fit_start(7)  # training starts after the restore: the state is kept
    assert torch.equal(restored.class_thresholds(), head.class_thresholds())
    with pytest.warns(UserWarning, match="predictions are for an unlabeled pool of 7 images, this run's has 8"):
        restored.on_fit_start(8)  # state of other images (a pretrained checkpoint of a run on other data)
    assert restored.pool_predictions.tolist() == [-1] * 8


def test_a_run_without_an_unlabeled_pool_is_refused_by_name():
    head = _head(pool_size=None)
    with pytest.raises(ConfigError, match=r"method\.loss_heads.*no unlabeled pool"):
        head.on_fit_start(None)


def _ddp_worker(rank: int, init_file: str, indices, confidence, labels, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        head = _head(num_classes=3, pool_size=8)
        head.update(indices.chunk(2)[rank], confidence.chunk(2)[rank], labels.chunk(2)[rank])  # half the batch each
        torch.save(head.state_dict(), f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


def test_every_rank_records_every_ranks_predictions_under_ddp(tmp_path: Path):
    indices, labels = torch.tensor([0, 2, 4, 1, 3, 7]), torch.tensor([1, 2, 0, 0, 1, 2])
    confidence = torch.tensor([0.99, 0.5, 0.96, 0.97, 0.2, 0.999])
    args = (str(tmp_path / "init"), indices, confidence, labels, str(tmp_path / "state"))
    mp.spawn(_ddp_worker, args=args, nprocs=2)
    single = _head(num_classes=3, pool_size=8)
    single.update(indices, confidence, labels)
    assert single.pool_predictions.tolist() == [1, 0, -1, -1, 0, -1, -1, 2]
    for rank in range(2):
        state = torch.load(tmp_path / f"state.{rank}")
        assert torch.equal(state["pool_predictions"], single.pool_predictions), rank
