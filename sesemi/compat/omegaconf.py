"""OmegaConf APIs whose names differ between the two lines sesemi supports: OmegaConf 2.3 (what Hydra 1.3 installs,
``omegaconf<2.4``) and 2.4 (Hydra 1.4, ``omegaconf>=2.4.1rc1``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import omegaconf
from omegaconf import OmegaConf

OMEGACONF_LINE: tuple[int, int] = tuple(int(p) for p in omegaconf.__version__.split(".")[:2])  # type: ignore[assignment]


def register_resolver(name: str, resolver: Callable[..., Any], *, use_cache: bool = False) -> None:
    """Register a resolver (``${name:args}``) under the running line's name for it.

    OmegaConf 2.4 renamed ``register_new_resolver`` to ``register_resolver`` (the old name warns); in 2.3
    ``register_resolver`` is the legacy string-only API, without ``use_cache``, and ``register_new_resolver`` is it.
    """
    if OMEGACONF_LINE < (2, 4):
        OmegaConf.register_new_resolver(name, resolver, use_cache=use_cache)
    else:
        OmegaConf.register_resolver(name, resolver, use_cache=use_cache)
