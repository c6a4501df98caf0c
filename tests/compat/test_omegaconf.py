"""sesemi.compat.omegaconf on the installed OmegaConf line (2.3 under Hydra 1.3, 2.4 under Hydra 1.4)."""

from __future__ import annotations

import warnings

from omegaconf import OmegaConf

from sesemi.compat.omegaconf import register_resolver


def test_register_resolver_registers_on_this_omegaconf_without_a_warning():
    calls = []

    def twice(x: int) -> int:
        calls.append(x)
        return 2 * int(x)

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        register_resolver("sesemi_compat_test.twice", twice, use_cache=True)
    try:
        cfg = OmegaConf.create({"a": "${sesemi_compat_test.twice:2}", "b": "${sesemi_compat_test.twice:2}"})
        assert (cfg.a, cfg.b) == (4, 4) and calls == [2]  # cached
    finally:
        OmegaConf.clear_resolver("sesemi_compat_test.twice")
