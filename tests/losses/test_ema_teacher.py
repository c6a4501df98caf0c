"""The EMA of the weights (Mean Teacher's teacher, the evaluated model)."""

import torch
from torch import nn

from sesemi.ema import EMA


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
