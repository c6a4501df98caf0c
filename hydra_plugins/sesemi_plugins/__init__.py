"""sesemi's Hydra plugins under names that both Hydra lines accept.

Hydra 1.3 finds plugins only by scanning this namespace package (``hydra_plugins``), and instantiates a launcher or
a sweeper only when its ``_target_`` starts with ``hydra_plugins.``; Hydra 1.4 also loads the ``hydra.plugins``
entry points. So each of sesemi's plugins is defined here, as its sesemi class under a name Hydra 1.3 takes, for the
configs (``hydra/launcher=slurm|slurm_cpu|local``, ``hydra/sweeper=grid|optuna_sync|optuna_async``) and the entry
points to name.

Hydra 1.3 cannot list the modules of a namespace package installed by setuptools' default editable mode (an import
hook); an editable install for the 1.3 line is made with ``--config-settings editable_mode=compat``. Only modules
are imported here, not classes: Hydra registers every plugin class it finds in this module's namespace.
"""

from sesemi import workspace as _workspace
from sesemi.cluster import launcher as _launcher
from sesemi.sweep import grid as _grid
from sesemi.sweep import sweeper as _sweeper


class WorkspaceSearchPath(_workspace.WorkspaceSearchPath):
    """:class:`sesemi.workspace.WorkspaceSearchPath`: the workspace's ``configs/`` first, for sesemi's apps only."""


class SlurmLauncher(_launcher.SlurmLauncher):
    """``hydra/launcher=slurm|slurm_cpu``: :class:`sesemi.cluster.launcher.SlurmLauncher`."""


class LocalLauncher(_launcher.LocalLauncher):
    """``hydra/launcher=local``: :class:`sesemi.cluster.launcher.LocalLauncher`."""


class GridSweeper(_grid.GridSweeper):
    """``hydra/sweeper=grid`` (the training app's default): :class:`sesemi.sweep.grid.GridSweeper`."""


class OptunaSweeper(_sweeper.OptunaSweeper):
    """``hydra/sweeper=optuna_sync|optuna_async``: :class:`sesemi.sweep.sweeper.OptunaSweeper`."""
