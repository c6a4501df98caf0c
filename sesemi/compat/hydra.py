"""Hydra internals used by sesemi's sweeper (checked against Hydra 1.4 and hydra-optuna-sweeper 1.3), and why.

- The search-space grammar (``interval(..)``, ``tag(log, ..)``, ``choice(..)``, ``range(..)``) is turned into
  Optuna distributions exactly as Hydra's own Optuna sweeper does, by its own functions, so that a search space
  means the same under ``hydra/sweeper=optuna`` and sesemi's sweepers; the plugin exports no public API.
- A failed job's exception: ``JobReturn.return_value`` re-raises it; the sweeper only wants to record it.
"""

from __future__ import annotations

from typing import Any

from hydra.core.utils import JobReturn
from optuna.distributions import BaseDistribution


def search_space(arguments: list[str]) -> tuple[dict[str, BaseDistribution], dict[str, Any], list[str]]:
    """Sweep overrides -> (distributions, fixed parameters, other overrides), as hydra/sweeper=optuna reads them."""
    from hydra_plugins.hydra_optuna_sweeper._impl import create_params_from_overrides

    return create_params_from_overrides(arguments)


def grid_choices(distribution: BaseDistribution) -> list[Any]:
    """The grid points of a discrete distribution, as Hydra's Optuna sweeper hands them to ``GridSampler``."""
    from hydra_plugins.hydra_optuna_sweeper._impl import OptunaSweeperImpl

    return list(OptunaSweeperImpl._to_grid_sampler_choices(distribution))


def job_error(ret: JobReturn) -> BaseException | None:
    """The exception of a failed job (``JobReturn._return_value``), without raising it."""
    return ret._return_value if ret.status.name == "FAILED" else None
