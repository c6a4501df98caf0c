"""Pseudo-label quality: the metric against a hand count, and every pseudo-labelling head reporting what its loss
used."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from sesemi.ema import EMA
from sesemi.losses import ConsistencyHead, FixMatchHead, FreeMatchHead, PseudoLabelHead, StepContext
from sesemi.metrics import per_class_accuracy, pseudo_label_quality
from sesemi.module import Classifier


def test_precision_and_recall_equal_a_hand_count():
    # 8 unlabeled images, 3 classes; the last one's true label is unknown (-1) and counts nowhere.
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 0, 1])
    mask = torch.tensor([1.0, 1.0, 1.0, 0.0, 1.0, 0.0, 1.0, 1.0])
    truth = torch.tensor([0, 1, 1, 1, 2, 0, 2, -1])
    q = pseudo_label_quality(labels, mask, truth, num_classes=3)
    # used with a known label: images 0, 1, 2, 4, 6 (5); right among them: 0, 2, 4 (3); known: 7 images.
    assert q["precision"].item() == pytest.approx(3 / 5)
    assert q["recall"].item() == pytest.approx(3 / 7)
    # pseudo-label 0 used on images 0, 1, 6, right on 0; label 1 used on 2, right; label 2 used on 4, right.
    assert q["precision_per_class"].tolist() == pytest.approx([1 / 3, 1.0, 1.0])
    # true class 0: images 0, 5 -> right and used: 0; class 1: images 1, 2, 3 -> 2; class 2: images 4, 6 -> 4.
    assert q["recall_per_class"].tolist() == pytest.approx([1 / 2, 1 / 3, 1 / 2])


def test_a_class_never_pseudo_labeled_has_no_precision_and_zero_recall():
    labels = torch.tensor([0, 0, 0])
    truth = torch.tensor([0, 1, 1])
    q = pseudo_label_quality(labels, torch.ones(3), truth, num_classes=2)
    assert math.isnan(q["precision_per_class"][1].item())  # undefined: never predicted, left out of the logs
    assert q["recall_per_class"].tolist() == [1.0, 0.0]


def test_nothing_used_gives_undefined_precision_and_zero_recall():
    q = pseudo_label_quality(torch.tensor([1, 0]), torch.zeros(2), torch.tensor([1, 0]), num_classes=2)
    assert math.isnan(q["precision"].item()) and q["recall"].item() == 0.0


def test_per_class_accuracy_reads_the_confusion_matrix_rows():
    confusion = torch.tensor([[3, 1], [0, 0]])
    accuracy = per_class_accuracy(confusion)
    assert accuracy[0].item() == 0.75 and math.isnan(accuracy[1].item())


def _ctx(batch, head, teacher=None):
    return StepContext(batch, nn.Identity(), nn.Identity(), 0, list(head.views), teacher=teacher, log=lambda n, v: None)


def test_fixmatch_reports_the_labels_and_mask_its_loss_used():
    weak = torch.tensor([[9.0, 0.0], [0.1, 0.0], [0.0, 9.0]])
    batch = {"unlabeled": {"weak": weak, "strong": torch.zeros(3, 2), "index": torch.tensor([4, 7, 9])}}
    head = FixMatchHead(threshold=0.95)
    ctx = _ctx(batch, head)
    ctx.scope = "fixmatch"
    head(ctx)
    reported = ctx.pseudo_labels["fixmatch"]
    assert reported.labels.tolist() == [0, 0, 1] and reported.mask.tolist() == [1.0, 0.0, 1.0]
    assert ctx.indices(reported.stream).tolist() == [4, 7, 9]


def test_freematch_reports_its_self_adaptive_mask_and_logs_class_thresholds():
    head = FreeMatchHead(momentum=0.0)  # the thresholds are this batch's statistics
    head.build(4, 2)
    weak = torch.tensor([[4.0, 0.0], [0.0, 0.2]])
    ctx = _ctx({"unlabeled": {"weak": weak, "strong": weak.clone()}}, head)
    ctx.scope = "freematch"
    head(ctx)
    probs = torch.softmax(weak, -1)
    expected = (probs.max(-1).values >= head.class_thresholds()[probs.argmax(-1)]).float()
    assert torch.equal(ctx.pseudo_labels["freematch"].mask, expected)
    assert torch.equal(ctx.class_metrics["freematch_threshold"], head.class_thresholds())


def test_pseudo_label_head_reports_its_confident_argmax():
    head = PseudoLabelHead(threshold=0.9)
    ctx = _ctx({"unlabeled": {"weak": torch.tensor([[5.0, 0.0], [0.0, 0.1]])}}, head)
    head(ctx)
    reported = ctx.pseudo_labels[""]
    assert reported.labels.tolist() == [0, 1] and reported.mask.tolist() == [1.0, 0.0]


def test_mean_teacher_reports_the_teachers_argmax_on_every_sample_and_exposes_teacher_features():
    student = Classifier(nn.Linear(4, 3), nn.Linear(3, 2))
    ema = EMA(student, decay=0.99)
    images = torch.randn(5, 4)
    head = ConsistencyHead(mode="mean_teacher", views=("weak", "weak"))
    ctx = StepContext(
        {"unlabeled": {"weak": images}},
        student.backbone,
        student.head,
        0,
        list(head.views),
        teacher=ema.module,
        log=lambda n, v: None,
    )
    head(ctx)
    reported = ctx.pseudo_labels[""]
    with torch.no_grad():
        assert torch.equal(reported.labels, ema.module(images).argmax(-1))
        assert torch.equal(ctx.teacher_features("unlabeled", "weak"), ema.module.backbone(images))
    assert reported.mask.tolist() == [1.0] * 5


def test_nothing_is_reported_for_scoring_when_the_step_does_not_log():
    head = ConsistencyHead(mode="pi")
    batch = {"unlabeled": {"weak": torch.randn(3, 2), "weak2": torch.randn(3, 2)}}
    ctx = StepContext(batch, nn.Identity(), nn.Identity(), 0, list(head.views))  # log=None: not a logging step
    head(ctx)
    assert ctx.pseudo_labels == {} and ctx.class_metrics == {}
