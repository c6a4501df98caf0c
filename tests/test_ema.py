"""sesemi.ema: the EMA of the weights (Mean Teacher's teacher, the evaluated model); its cached tensor lists (an
optimisation the step-overhead benchmark led to) keep exactly the average a plain per-parameter update gives."""

from __future__ import annotations

import torch
from torch import nn

from sesemi.ema import EMA


def test_ema_cached_tensor_lists_track_the_model():
    import copy

    from sesemi.models import LinearHead, SmallCNN
    from sesemi.module import Classifier

    torch.manual_seed(0)
    backbone = SmallCNN(1, 8, 2)
    model = Classifier(backbone, LinearHead(backbone.out_features, 10))
    ema = EMA(model, 0.9)
    reference = copy.deepcopy(ema.module)

    def reference_update(n: int) -> None:
        decay = min(0.9, (1 + n) / (10 + n))
        with torch.no_grad():
            for r, m in zip([*reference.parameters(), *reference.buffers()], [*model.parameters(), *model.buffers()]):
                r.lerp_(m, 1 - decay) if r.is_floating_point() else r.copy_(m)

    x = torch.randn(4, 1, 8, 8)
    for n in range(1, 5):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        model(x)  # batch-norm statistics move too
        if n == 3:  # a parameter object replaced between updates
            model.head.fc.weight = torch.nn.Parameter(torch.randn_like(model.head.fc.weight))
        ema.update(model)
        reference_update(n)
        for a, b in zip(ema.module.state_dict().values(), reference.state_dict().values()):
            assert torch.equal(a, b)


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
