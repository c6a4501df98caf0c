"""Hydra APIs that sesemi uses but Hydra does not document as stable, and where the Hydra 1.3 and 1.4 lines differ,
and why (one module, so an upstream move breaks here; ``tests/compat/test_hydra.py`` uses each name).

Both Hydra lines, 1.3 (from 1.3.2) and 1.4 (:data:`HYDRA_LINE` tells which one runs):

- ``hydra.main`` / ``initialize_config_module`` (:func:`main`, :func:`initialize_config_module`): Hydra 1.3 without
  ``version_base`` assumes 1.1's defaults and warns on every run; 1.4 deprecates the argument (warns when given).
  Hydra 1.3 refuses overrides on both sides of an option (``a=1 -m b=1,2``), 1.4 takes them (``_options_first``:
  Hydra's private ``get_args_parser``).
- ``instantiate`` (:func:`instantiate`): Hydra 1.4 checks ``_target_`` against an execution allow-list, which
  sesemi opts out of (a config is the user's own code); 1.3 has no such argument.
- ``configure_log`` (:func:`configure_log`): 1.4 checks a logging config's classes against the job's allow-list
  (``HydraContext.execution_whitelist``, new in 1.4).
- Plugins: Hydra 1.3 reads no ``hydra.plugins`` entry points; it finds plugins by scanning the ``hydra_plugins``
  namespace package and instantiates a launcher or sweeper only when its ``_target_`` starts with ``hydra_plugins.``
  (``hydra_plugins/sesemi_plugins`` holds sesemi's plugins under such names), recursively unless the node says
  ``_recursive_: false``. Its scan executes Hydra's core plugin modules again, so ``BasicSweeper`` is looked up
  when asked (the module's ``__getattr__``), and held, not subclassed (``sesemi.sweep.grid``).

Sweeper (``sesemi.sweep``):

- :func:`search_space` and :func:`grid_choices` are Hydra's own Optuna sweeper's reading of the search-space grammar
  (its private functions; the ``hydra-optuna`` extra, Hydra 1.4 line only). sesemi parses the grammar itself
  (:mod:`sesemi.sweep.grammar`, on Hydra's override parser, on both lines); these are the reference
  ``tests/sweep/test_grammar.py`` holds it to, where the plugin is installed.
- A failed job's exception: ``JobReturn.return_value`` re-raises it; sweepers and launchers only want to record it.

Launchers (``sesemi.cluster.launcher``). These live under ``hydra.core`` (not ``hydra._internal``) and are what every
Hydra launcher plugin calls (Hydra's basic launcher, hydra-submitit-launcher, hydra-joblib-launcher):

- ``Singleton.get_state/set_state``: a job in another process (a SLURM task) needs the submitting process's
  ConfigStore and plugin registry, exactly as hydra-submitit-launcher ships them.
- ``setup_globals``: registers Hydra's resolvers (``${hydra:...}``, ``${now:...}``) in that process.
- ``run_job``: runs the task function in the job's output dir with Hydra's logging and ``.hydra/`` files.
- ``filter_overrides``: drops ``hydra.*`` overrides when a job's overrides are shown to users.
- ``load_sweep_config``: one sweep job's composed config (through ``HydraContext.config_loader``).

Code snapshots (``sesemi.cluster.snapshot``):

- ``repoint_search_path``: a job composes its config with the config loader pickled at submission, whose search path
  names the live workspace ``configs/``; the job must compose from the snapshot's copy. ``ConfigLoaderImpl`` builds
  its config sources once, from its search path, when it is created (``ConfigLoaderImpl.repository``, not part of
  the ``ConfigLoader`` interface; ``ConfigSearchPath.append/prepend`` say they take effect only before that), so the
  path is changed and the sources built again.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

import hydra
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

if TYPE_CHECKING:  # optuna is the sweep extra; the launchers import this module without it
    from optuna.distributions import BaseDistribution

HYDRA_LINE: tuple[int, int] = tuple(int(part) for part in hydra.__version__.split(".")[:2])  # type: ignore[assignment]

# Hydra 1.3 takes its own current behaviour only when asked ("1.3"); 1.4 has it by default and warns when asked.
_VERSION_BASE: dict[str, str] = {"version_base": "1.3"} if HYDRA_LINE < (1, 4) else {}


def main(config_path: str, config_name: str) -> Callable[[TaskFunction], Callable[..., Any]]:
    """``hydra.main`` with the running line's own behaviour and no warning (Hydra 1.3 without ``version_base`` would
    warn and take 1.1's defaults, such as running the job inside its output dir), and one command line for both:
    Hydra 1.4 reads it with ``parse_intermixed_args`` (``a=1 -m b=1,2``), Hydra 1.3 with ``parse_args``, which
    refuses overrides on both sides of an option; on 1.3 the options are put first."""
    hydra_main = hydra.main(config_path=config_path, config_name=config_name, **_VERSION_BASE)
    if HYDRA_LINE >= (1, 4):
        return hydra_main

    def decorator(task_function: TaskFunction) -> Callable[..., Any]:
        decorated = hydra_main(task_function)

        @functools.wraps(task_function)
        def run(cfg_passthrough: DictConfig | None = None) -> Any:
            if cfg_passthrough is None:  # a command line (not a config handed over by Python)
                sys.argv[1:] = _options_first(sys.argv[1:])
            return decorated(cfg_passthrough)

        return run

    return decorator


def _options_first(argv: list[str]) -> list[str]:
    """The command line as Hydra 1.4 reads it, written for Hydra 1.3's ``parse_args``: the options given, then the
    overrides in their order (Hydra's own parser and its option actions: argparse keeps them in ``_actions``)."""
    from hydra._internal.utils import get_args_parser

    parser = get_args_parser()
    given = parser.parse_intermixed_args(argv)
    options: list[str] = []
    for action in parser._actions:
        value = getattr(given, action.dest, action.default)  # unset: --version (it exits when given)
        if not action.option_strings or value == action.default:
            continue
        options += [action.option_strings[0]] if action.nargs == 0 else [action.option_strings[0], str(value)]
    return [*options, *given.overrides]


def initialize_config_module(config_module: str) -> AbstractContextManager[Any]:
    """``hydra.initialize_config_module`` (for ``compose``) with the same behaviour as :func:`main` on both lines."""
    return hydra.initialize_config_module(config_module=config_module, **_VERSION_BASE)


def instantiate(config: Any, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate`` of a sesemi config, whose ``_target_`` may be any class of the user's.

    Hydra 1.4 checks targets against an execution allow-list (``hydra.main(execution_whitelist=...)``); a sesemi
    config is the user's own code, like a script, so sesemi opts out (``UNSAFE_DISABLE_EXECUTION_CHECKS``). Hydra
    1.3 has no such argument (1.3.2 checks nothing; later 1.3 releases, 1.3.8 for one, refuse a few targets such as
    ``os.remove`` or ``operator.itemgetter``, with no opt-out in code, only the environment variable
    ``HYDRA_INSTANTIATE_ALLOWLIST_OVERRIDE`` for some; sesemi's configs name none of them).
    """
    from hydra.utils import instantiate as hydra_instantiate

    if HYDRA_LINE < (1, 4):
        return hydra_instantiate(config, **kwargs)
    from hydra.utils import UNSAFE_DISABLE_EXECUTION_CHECKS

    return hydra_instantiate(config, _execution_whitelist_=UNSAFE_DISABLE_EXECUTION_CHECKS, **kwargs)


def configure_log(hydra_context: HydraContext, log_config: DictConfig, verbose: Any) -> None:
    """Hydra's logging set-up of a job (``hydra.job_logging``, ``hydra.verbose``), as ``run_job`` does it: on 1.4
    under the context's execution allow-list (``HydraContext.execution_whitelist``, which 1.3 lacks)."""
    from hydra.core.utils import configure_log as hydra_configure_log

    if HYDRA_LINE < (1, 4):
        hydra_configure_log(log_config, verbose)
    else:
        hydra_configure_log(log_config, verbose, execution_whitelist=hydra_context.execution_whitelist)


def search_space(arguments: list[str]) -> tuple[dict[str, BaseDistribution], dict[str, Any], list[str]]:
    """Sweep overrides -> (distributions, fixed parameters, other overrides), as hydra/sweeper=optuna reads them
    (needs hydra-optuna-sweeper)."""
    from hydra_plugins.hydra_optuna_sweeper._impl import create_params_from_overrides

    return create_params_from_overrides(arguments)


def grid_choices(distribution: BaseDistribution) -> list[Any]:
    """The grid points of a discrete distribution, as Hydra's Optuna sweeper hands them to ``GridSampler`` (needs
    hydra-optuna-sweeper)."""
    from hydra_plugins.hydra_optuna_sweeper._impl import OptunaSweeperImpl

    return list(OptunaSweeperImpl._to_grid_sampler_choices(distribution))


def __getattr__(name: str) -> Any:
    """``BasicSweeper``: Hydra's basic sweeper class as its module holds it when asked.

    Hydra 1.3's plugin scan executes the modules of ``hydra._internal.core_plugins`` again, in place, even when they
    were imported, and 1.3's ``BasicSweeper.__init__`` calls ``super(BasicSweeper, self)`` by its module's global
    name: a subclass of the class imported before the scan fails there ("obj must be an instance or subtype of
    type"). So sesemi's grid sweeper holds a basic sweeper, made from the class looked up here when the grid sweeper
    is made, instead of subclassing it (:class:`sesemi.sweep.grid.GridSweeper`, whatever was imported before the
    scan). (Hydra 1.4's scan imports each module once.)
    """
    if name == "BasicSweeper":
        from hydra._internal.core_plugins import basic_sweeper

        return basic_sweeper.BasicSweeper
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def job_error(ret: JobReturn) -> BaseException | None:
    """The exception of a failed job (``JobReturn._return_value``), without raising it; None if it did not fail."""
    return ret._return_value if ret.status == JobStatus.FAILED else None


def load_sweep_config(hydra_context: HydraContext, master: DictConfig, overrides: Sequence[str]) -> DictConfig:
    """The composed config of one sweep job (the master config plus the job's overrides)."""
    return hydra_context.config_loader.load_sweep_config(master, list(overrides))


def repoint_search_path(config_loader: Any, old: str, new: str) -> bool:
    """Make a config loader's search path entries that are ``old`` (e.g. ``file:///ws/configs``) ``new``, and its
    config sources follow; False when no entry is ``old`` (nothing changed)."""
    search_path = config_loader.get_search_path()
    entries = [e for e in search_path.get_path() if e.path == old]
    for entry in entries:
        entry.path = new
    if entries:
        config_loader.repository.initialize_sources(search_path)
    return bool(entries)


def singleton_state() -> dict[type, Any]:
    return Singleton.get_state()


def restore_singletons(state: dict[type, Any]) -> None:
    Singleton.set_state(state)


__all__ = [
    "HYDRA_LINE",
    "JobReturn",
    "JobStatus",
    "Launcher",
    "configure_log",
    "filter_overrides",
    "grid_choices",
    "initialize_config_module",
    "instantiate",
    "job_error",
    "load_sweep_config",
    "main",
    "repoint_search_path",
    "restore_singletons",
    "run_job",
    "search_space",
    "setup_globals",
    "singleton_state",
]
