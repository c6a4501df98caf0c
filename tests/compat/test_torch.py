"""sesemi.compat.torch against the installed torch: the CPU's native bf16, as the CPU flags tell it."""

from __future__ import annotations

from pathlib import Path

import pytest

from sesemi.compat.torch import cpu_has_native_bf16

CPUINFO = Path("/proc/cpuinfo")


@pytest.mark.skipif(not CPUINFO.exists(), reason="reads the CPU flags of Linux")
def test_native_bf16_detection_agrees_with_the_cpu_flags():
    flags = {word for line in CPUINFO.read_text().splitlines() if line.startswith("flags") for word in line.split()}
    assert cpu_has_native_bf16() == bool(flags & {"avx512_bf16", "amx_bf16", "amx_tile"})
