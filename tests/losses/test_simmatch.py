"""SimMatchHead: label unfolding and aggregation against the paper's formulas written out per entry, the labeled
memory (per-class ring buffers), the loss on hand-made features, checkpointed state and a memory shared by every
rank under DDP."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

from sesemi.losses import SimMatchHead, StepContext, aggregate_labels, unfold_labels


def _head(num_classes: int = 3, in_features: int = 4, **kwargs) -> SimMatchHead:
    torch.manual_seed(0)
    head = SimMatchHead(**kwargs)
    head.build(in_features=in_features, num_classes=num_classes)
    return head


SIMILARITY = torch.tensor([[0.5, 0.2, 0.1, 0.2], [0.1, 0.1, 0.7, 0.1]])  # q over 4 memory entries
CLASS_PROBS = torch.tensor([[0.6, 0.3, 0.1], [0.2, 0.2, 0.6]])  # p^w over 3 classes
MEMORY_LABELS = torch.tensor([0, 0, 1, 2])  # y_j of each memory entry


def test_unfolding_scales_each_entry_by_the_class_probability_of_its_label():
    got = unfold_labels(SIMILARITY, CLASS_PROBS, MEMORY_LABELS)
    for b in range(2):
        scaled = [SIMILARITY[b, j] * CLASS_PROBS[b, MEMORY_LABELS[j]] for j in range(4)]
        expected = [s / sum(scaled) for s in scaled]  # q^_j = q_j p_{y_j} / sum_k q_k p_{y_k}
        assert got[b].tolist() == pytest.approx([e.item() for e in expected])


def test_aggregation_is_the_papers_product_or_the_authors_mixing():
    aggregated = [
        [sum(SIMILARITY[b, j] for j in range(4) if MEMORY_LABELS[j] == c) for c in range(3)] for b in range(2)
    ]
    product = aggregate_labels(SIMILARITY, CLASS_PROBS, MEMORY_LABELS)
    mixed = aggregate_labels(SIMILARITY, CLASS_PROBS, MEMORY_LABELS, alpha=0.9)
    for b in range(2):
        calibrated = [CLASS_PROBS[b, c] * aggregated[b][c] for c in range(3)]  # p^_c = p_c q^agg_c / sum
        assert product[b].tolist() == pytest.approx([(x / sum(calibrated)).item() for x in calibrated])
        assert mixed[b].tolist() == pytest.approx(
            [(0.9 * CLASS_PROBS[b, c] + 0.1 * aggregated[b][c]).item() for c in range(3)]
        )
    assert torch.allclose(product.sum(-1), torch.ones(2)) and torch.allclose(mixed.sum(-1), torch.ones(2))


def test_the_memory_keeps_the_most_recent_labeled_embeddings_of_each_class():
    head = _head(num_classes=2, bank_per_class=2, projection_dim=1)
    head.remember(torch.tensor([[1.0], [2.0], [3.0]]), torch.tensor([0, 1, 0]))
    assert head.memory_filled.tolist() == [2, 1]
    assert head.memory[0].flatten().tolist() == [1.0, 3.0] and head.memory[1, 0].item() == 2.0
    head.remember(torch.tensor([[4.0], [5.0], [6.0], [7.0]]), torch.tensor([0, 1, 1, 1]))
    assert head.memory_filled.tolist() == [2, 2]
    assert sorted(head.memory[0].flatten().tolist()) == [3.0, 4.0]  # 1 was the oldest
    assert sorted(head.memory[1].flatten().tolist()) == [6.0, 7.0]  # more than it holds: the last two kept


def test_empty_memory_slots_get_no_similarity():
    head = _head(num_classes=2, bank_per_class=3, projection_dim=2)
    head.remember(F.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), dim=-1), torch.tensor([0, 1]))
    q = torch.softmax(head.similarity_logits(torch.tensor([[1.0, 0.0]])), -1)
    assert q[0, [1, 2, 4, 5]].sum().item() == pytest.approx(0.0, abs=1e-12)
    assert q[0, 0].item() == pytest.approx(1 / (1 + torch.exp(torch.tensor(-1 / 0.1)).item()))


def test_loss_is_the_masked_soft_class_loss_plus_the_instance_loss():
    head = _head(
        num_classes=3,
        in_features=4,
        threshold=0.6,
        temperature=0.5,
        in_weight=0.5,
        projection_dim=4,
        bank_per_class=2,
        distribution_alignment=False,
    )
    labeled = torch.randn(6, 4)
    targets = torch.tensor([0, 1, 2, 0, 1, 2])
    weak, strong = torch.randn(5, 4) * 3, torch.randn(5, 4, requires_grad=True)
    batch = {"labeled": {"weak": labeled, "target": targets}, "unlabeled": {"weak": weak, "strong": strong}}
    # the "backbone" is the identity and the classifier takes the first 3 features as logits
    classifier = nn.Linear(4, 3, bias=False)
    classifier.weight.data = torch.eye(3, 4)
    ctx = StepContext(batch, nn.Identity(), classifier, 0, list(head.views))
    loss = head(ctx)

    with torch.no_grad():
        bank = F.normalize(head.projection(labeled), dim=-1)
        memory_labels = torch.tensor([0, 0, 1, 1, 2, 2])
        memory = torch.stack([bank[targets == c] for c in range(3)]).flatten(0, 1)
        assert torch.allclose(head.memory.flatten(0, 1), memory)
        q = torch.softmax(F.normalize(head.projection(weak), dim=-1) @ memory.t() / 0.5, -1)
        p = torch.softmax(weak[:, :3], -1)
        agg = torch.stack([q[:, memory_labels == c].sum(-1) for c in range(3)], -1)
        p_hat = p * agg / (p * agg).sum(-1, keepdim=True)
        q_hat = q * p[:, memory_labels] / (q * p[:, memory_labels]).sum(-1, keepdim=True)
    mask = (p_hat.max(-1).values >= 0.6).float()
    class_loss = (-(p_hat * F.log_softmax(strong[:, :3], -1)).sum(-1) * mask).mean()
    q_strong = F.log_softmax(F.normalize(head.projection(strong), dim=-1) @ memory.t() / 0.5, -1)
    instance_loss = -(q_hat * q_strong).sum(-1).mean()
    assert loss.item() == pytest.approx((class_loss + 0.5 * instance_loss).item(), rel=1e-5)
    assert ctx.pseudo_labels[""].labels.tolist() == p_hat.argmax(-1).tolist()
    assert ctx.metrics["mask_ratio"].item() == pytest.approx(mask.mean().item())
    loss.backward()
    assert strong.grad is not None and head.projection[0].weight.grad is not None  # the projection head learns


def test_memory_projection_and_alignment_are_checkpointed():
    head = _head()
    head.remember(torch.randn(4, 128), torch.tensor([0, 1, 2, 2]))
    restored = _head()
    restored.load_state_dict(head.state_dict())
    assert {"memory", "memory_filled", "memory_next", "alignment.p_model", "projection.0.weight"} <= set(
        head.state_dict()
    )
    assert torch.equal(restored.memory, head.memory) and torch.equal(restored.memory_filled, head.memory_filled)


def _ddp_worker(rank: int, init_file: str, embeddings: torch.Tensor, labels: torch.Tensor, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        head = _head(num_classes=2, bank_per_class=4, projection_dim=2)
        head.remember(embeddings.chunk(2)[rank], labels.chunk(2)[rank])  # each rank sees half of the labeled batch
        torch.save(head.state_dict(), f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_every_rank_remembers_the_labeled_embeddings_of_all_ranks_under_ddp(tmp_path: Path):
    embeddings, labels = torch.randn(4, 2), torch.tensor([0, 1, 1, 0])
    mp.spawn(_ddp_worker, args=(str(tmp_path / "init"), embeddings, labels, str(tmp_path / "state")), nprocs=2)
    single = _head(num_classes=2, bank_per_class=4, projection_dim=2)
    single.remember(embeddings, labels)
    for rank in range(2):
        state = torch.load(tmp_path / f"state.{rank}")
        for name in ("memory", "memory_filled", "memory_next"):
            assert torch.equal(state[name], single.state_dict()[name]), (rank, name)
