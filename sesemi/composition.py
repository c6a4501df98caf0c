"""``sesemi.compose(overrides)``: the training app's config as Python gets it, without running anything.

What tests, benchmarks and notebooks use to build a run's config exactly as ``python -m sesemi.train`` composes it
(the built-in configs, the workspace's ``configs/`` first, the resolvers registered), with the run dir given
instead of Hydra's (there is no Hydra job to make one).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from omegaconf import DictConfig

from sesemi import resolvers


def compose(
    overrides: Sequence[str] = (),
    output_dir: str | os.PathLike | None = None,
    config_name: str = "train",
    return_hydra_config: bool = False,
) -> DictConfig:
    """The composed config of ``python -m sesemi.train <overrides>``; ``output_dir``: the run dir
    (``run.output_dir``), which a composed config cannot take from Hydra."""
    from hydra import compose as hydra_compose

    from sesemi.compat.hydra import initialize_config_module

    resolvers.register()
    extra = [] if output_dir is None else [f"run.output_dir={os.fspath(output_dir)}"]
    with initialize_config_module("sesemi.configs"):  # as the app's @hydra.main: Hydra's defaults for it
        return hydra_compose(config_name, overrides=[*overrides, *extra], return_hydra_config=return_hydra_config)
