"""CoMatch's graph-contrastive head: the pseudo-label graph and the loss follow the paper's formulas, computed here
pair by pair, and only the strong view's embeddings carry gradient."""

import math

import torch
import torch.nn.functional as F
from torch import nn

from sesemi.losses import GraphContrastiveHead, StepContext, pseudo_label_graph


def test_pseudo_label_graph_keeps_agreements_above_the_threshold_and_a_self_loop():
    probs = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.1, 0.9]])
    graph = pseudo_label_graph(probs, threshold=0.7)
    # q0.q1 = 0.74 is kept, q0.q2 = q1.q2 = 0.18/0.26 are cut, every image joins itself
    expected = torch.tensor([[1.0, 0.74, 0.0], [0.74, 1.0, 0.0], [0.0, 0.0, 1.0]])
    torch.testing.assert_close(graph, expected / expected.sum(1, keepdim=True))


def test_loss_is_the_cross_entropy_between_the_pseudo_label_graph_and_the_embedding_graph():
    torch.manual_seed(0)
    weak, strong = torch.randn(6, 1, 4, 4), torch.randn(6, 1, 4, 4)
    head = GraphContrastiveHead(threshold=0.3, temperature=0.2, projection_dim=8, separate_weak_forward=True)
    head.build(in_features=16, num_classes=3)
    classifier = nn.Linear(16, 3)
    batch = {"unlabeled": {"weak": weak, "strong": strong}}
    ctx = StepContext(batch, nn.Flatten(), classifier, 0, list(head.views), detached_views=list(head.detached_views))
    loss = head(ctx)

    with torch.no_grad():
        probs = torch.softmax(classifier(weak.flatten(1)), dim=-1)
        keys = [F.normalize(head.projection(x.flatten()), dim=0) for x in weak]
        queries = [F.normalize(head.projection(x.flatten()), dim=0) for x in strong]
    n = len(weak)
    kept = [float(probs[i] @ probs[j]) >= 0.3 for i in range(n) for j in range(n) if i != j]
    assert any(kept) and not all(kept)  # the threshold keeps some edges and cuts others
    terms = []
    for i in range(n):
        edges = [1.0 if i == j else float(probs[i] @ probs[j]) for j in range(n)]
        edges = [e if i == j or e >= 0.3 else 0.0 for j, e in enumerate(edges)]
        target = [e / sum(edges) for e in edges]
        logits = [float(queries[i] @ keys[j]) / 0.2 for j in range(n)]
        log_norm = math.log(sum(math.exp(v) for v in logits))
        terms.append(-sum(t * (v - log_norm) for t, v in zip(target, logits)))
    torch.testing.assert_close(loss, torch.tensor(sum(terms) / n), rtol=1e-5, atol=1e-5)

    loss.backward()
    assert classifier.weight.grad is None  # the weak view's pseudo-labels carry no gradient
    assert head.projection[0].weight.grad.abs().sum() > 0
