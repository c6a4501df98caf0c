"""sesemi.builders: ``run.precision``, sesemi's own values resolved to what the device runs fast."""

from __future__ import annotations

import logging

from sesemi.builders import resolve_precision
from sesemi.compat.torch import cpu_has_native_bf16


def test_bf16_where_native_else_full_precision_on_cpu():
    assert resolve_precision("bf16-mixed-if-native", "cpu") == ("bf16-mixed" if cpu_has_native_bf16() else "32-true")
    assert resolve_precision("auto", "cpu") == "32-true"
    assert resolve_precision("16-mixed", "cpu") == "16-mixed"  # a Lightning value passes unchanged


def test_emulated_bf16_on_cpu_is_a_warning_that_names_the_fix(caplog):
    with caplog.at_level(logging.WARNING, logger="sesemi"):
        assert resolve_precision("bf16-mixed", "cpu") == "bf16-mixed"  # what was asked, only slower
    if cpu_has_native_bf16():
        assert not caplog.records
    else:
        (record,) = caplog.records
        assert "run.precision=bf16-mixed" in record.getMessage()
        assert "run.precision=32-true or bf16-mixed-if-native" in record.getMessage()
