"""FixMatch's confidence mask and loss, on real tensors."""

import torch
from torch import nn

from sesemi.losses import FixMatchHead, StepContext, confident_pseudo_labels


def test_fixmatch_masks_low_confidence_samples():
    logits = torch.tensor([[10.0, 0.0], [0.2, 0.0], [0.0, 8.0]])
    labels, mask = confident_pseudo_labels(logits, threshold=0.95)
    assert labels.tolist() == [0, 0, 1]
    assert mask.tolist() == [1.0, 0.0, 1.0]


def test_fixmatch_loss_ignores_unconfident_samples():
    head = FixMatchHead(threshold=0.95)
    backbone = nn.Identity()
    classifier = nn.Identity()  # "features" are the logits themselves
    weak = torch.tensor([[0.1, 0.0], [0.1, 0.0]])  # nothing confident
    strong = torch.tensor([[0.0, 5.0], [0.0, 5.0]])
    batch = {"unlabeled": {"weak": weak, "strong": strong}}
    ctx = StepContext(batch, backbone, classifier, 0, list(head.views))
    assert head(ctx).item() == 0.0
    assert ctx.metrics["mask_ratio"].item() == 0.0
