"""Ramp-ups of the loss weights and the FixMatch cosine LR schedule."""

import torch

from sesemi.losses import FixMatchHead, sigmoid_rampup


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
