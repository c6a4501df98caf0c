"""Behaviour of the loss heads' cores and of the EMA, on real tensors."""

import torch
from torch import nn

from sesemi.ema import EMA
from sesemi.losses import FixMatchHead, StepContext, confident_pseudo_labels, rotate_batch, sigmoid_rampup


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


def test_rotation_labels_match_rotations():
    image = torch.arange(16.0).view(1, 1, 4, 4)
    images = image.repeat(4, 1, 1, 1)
    rotated = rotate_batch(images, torch.tensor([0, 1, 2, 3]))
    for k in range(4):
        assert torch.equal(rotated[k], torch.rot90(image[0], k, dims=(-2, -1)))


def test_ema_moves_toward_student_with_configured_decay():
    student = nn.Linear(2, 1, bias=False)
    ema = EMA(student, decay=0.9, warmup=False)
    with torch.no_grad():
        student.weight.fill_(1.0)
        ema.module.weight.fill_(0.0)
    ema.update(student)
    assert torch.allclose(ema.module.weight, torch.full((1, 2), 0.1))
    ema.update(student)
    assert torch.allclose(ema.module.weight, torch.full((1, 2), 0.19))


def test_ema_warmup_starts_low_and_is_checkpointed():
    ema = EMA(nn.Linear(2, 1), decay=0.999)
    assert ema.current_decay() == 0.1
    ema.update(nn.Linear(2, 1))
    restored = EMA(nn.Linear(2, 1), decay=0.999)
    restored.load_state_dict(ema.state_dict())
    assert restored.updates == 1


def test_rampup_as_a_fraction_follows_the_run_length():
    head = FixMatchHead(weight=2.0, rampup_steps=0.5, rampup="linear")
    assert head.scale(50, total_steps=200) == 2.0 * 50 / 100
    assert head.scale(100, total_steps=200) == 2.0
    assert FixMatchHead(rampup_steps=40, rampup="linear").scale(10, total_steps=200) == 0.25


def test_sigmoid_rampup_reaches_one():
    assert sigmoid_rampup(0, 100) < 0.01
    assert sigmoid_rampup(100, 100) == 1.0


def test_fixmatch_cosine_schedule_ends_near_a_fifth_of_the_lr():
    from sesemi.schedules import fixmatch_cosine

    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.03)
    schedule = fixmatch_cosine(optimizer, total_steps=100)
    factors = []
    for step in range(101):
        if step in (0, 50, 100):
            factors.append(optimizer.param_groups[0]["lr"] / 0.03)
        optimizer.step()
        schedule.step()
    assert factors[0] == 1.0 and 0.19 < factors[2] < 0.2 and factors[0] > factors[1] > factors[2]
