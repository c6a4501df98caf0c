"""The fused and fast transforms (optimisations the data-pipeline benchmark led to) give torchvision's pixels and draw
the same random numbers, so runs are reproduced exactly."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize(
    ("mode", "mean", "std"),
    [
        ("L", [0.3], [0.4]),
        ("RGB", [0.49, 0.48, 0.45], [0.25, 0.24, 0.26]),
        ("RGB", [0.5], [0.25]),
        ("L", [0.1, 0.2, 0.3], [0.3, 0.3, 0.3]),
        ("RGBA", [0.5] * 4, [0.2] * 4),
    ],
)
def test_fused_normalized_tensor_matches_torchvision(mode: str, mean: list[float], std: list[float]):
    import numpy as np
    import torch
    from PIL import Image
    from torchvision.transforms import v2

    from sesemi.data import to_normalized_tensor

    reference = v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)])
    fused = to_normalized_tensor(mean, std)
    rng = np.random.default_rng(0)
    shape = {"L": (9, 7), "RGB": (9, 7, 3), "RGBA": (9, 7, 4)}[mode]
    for _ in range(5):
        image = Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode)
        a, b = reference(image), fused(image)
        assert type(a) is type(b) and a.shape == b.shape and torch.equal(a, b)
    tensor = v2.ToImage()(image)
    assert torch.equal(reference(tensor), fused(tensor))


@pytest.mark.parametrize("mode", ["L", "RGB"])
@pytest.mark.parametrize("padding_mode", ["constant", "edge", "reflect", "symmetric"])
def test_fast_crop_flip_and_erasing_match_torchvision(mode: str, padding_mode: str):
    """Same pixels and the same random numbers drawn (so runs are reproduced exactly), also on error paths."""
    import numpy as np
    import torch
    from PIL import Image
    from torchvision.transforms import v2

    from sesemi.data.transforms import cutout, fast, to_normalized_tensor

    rng = np.random.default_rng(0)
    case = 0
    for (h, w), size, padding, pad_if_needed in [
        ((8, 8), 8, 1, False),
        ((7, 9), 8, None, True),
        ((7, 9), (6, 5), (1, 2), False),
        ((8, 8), 8, None, False),
        ((32, 32), 32, 4, False),
        ((5, 5), 8, (0, 1, 2, 3), True),
        ((5, 5), 8, None, False),
    ]:
        t = v2.RandomCrop(size, padding=padding, padding_mode=padding_mode, pad_if_needed=pad_if_needed)
        for _ in range(4):
            case += 1
            image = Image.fromarray(rng.integers(0, 256, (h, w) if mode == "L" else (h, w, 3), dtype=np.uint8), mode)
            results = []
            for transform in (t, fast(t)):
                torch.manual_seed(case)
                try:
                    out = np.asarray(transform(image))
                except ValueError as err:
                    out = type(err)
                results.append((out, torch.rand(1).item()))
            (a, ra), (b, rb) = results
            assert ra == rb
            assert a is b if isinstance(a, type) else np.array_equal(a, b)
    for t, make_input in (
        (v2.RandomHorizontalFlip(), lambda im: im),
        (cutout(0.5), to_normalized_tensor([0.5] * len(mode), [0.25] * len(mode))),
    ):
        for i in range(20):
            image = make_input(
                Image.fromarray(rng.integers(0, 256, (8, 8, 3)[: 2 if mode == "L" else 3], dtype=np.uint8), mode)
            )
            outs = []
            for transform in (t, fast(t)):
                torch.manual_seed(i)
                outs.append(
                    (np.asarray(transform(image.clone() if hasattr(image, "clone") else image)), torch.rand(1).item())
                )
            assert np.array_equal(outs[0][0], outs[1][0]) and outs[0][1] == outs[1][1]
