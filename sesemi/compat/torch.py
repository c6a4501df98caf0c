"""PyTorch's private APIs that sesemi uses."""

from __future__ import annotations

import torch


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (AVX512-BF16 or AMX). Elsewhere PyTorch emulates bf16 autocast,
    several times slower than fp32 (docs/benchmarks.md). ``torch.cpu`` has no public function that says so."""
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
