"""``hydra/sweeper=grid`` (the training app's default for ``-m``): Hydra's basic sweeper, made fit for large grids.

Every point of a grid is known at the start and nothing is chosen from results, so:

- it tells the launcher that its launches need no results: ``hydra.launcher.wait=false`` may detach the grid
  (:mod:`sesemi.cluster.capabilities`);
- it checks that the points compose by composing one point per *shape* instead of every point: points whose
  overrides differ only in the values of plain keys (``optimizer.lr=0.01`` vs ``0.1``, ``run.seed=0..1999``) share
  a shape; a group choice (``model=...``) or a ``hydra.*`` value makes a shape of its own. A 2,000-seed grid composes
  once here where Hydra's basic sweeper composes 2,000 times; each job still composes its own config where it runs;
- with ``hydra.sweeper.over=run.seed`` it ends with the table of the points grouped over the seeds: each group's
  mean ± std of the objective (:mod:`sesemi.cluster.grouping`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.plugins.sweeper import Sweeper

from sesemi.cluster.capabilities import capabilities_of, expect_results
from sesemi.cluster.grouping import format_groups, group_over, objective_name, run_dirs
from sesemi.sweepdir import SweepDir


def shape(overrides: Sequence[str]) -> tuple[str, ...]:
    """What decides whether a point composes: each plain key's name, and every other override whole."""
    parts = []
    for override in overrides:
        key = override.split("=", 1)[0]
        name = key.lstrip("+~")
        plain = "." in name and "/" not in name and "@" not in key and not name.startswith("hydra")
        parts.append(key if plain else override)
    return tuple(parts)


class GridSweeper(Sweeper):
    """Hydra's basic sweeper (its ``max_batch_size``, ``params``, batches and job numbers), held rather than
    subclassed: Hydra 1.3's plugin scan executes Hydra's ``basic_sweeper`` module again, and a subclass of the class
    imported before that scan fails in ``BasicSweeper.__init__`` (see ``BasicSweeper`` in :mod:`sesemi.compat.hydra`).
    The basic sweeper's class is looked up when a grid sweeper is made, after any scan."""

    def __init__(
        self, max_batch_size: int | None = None, params: dict[str, str] | None = None, over: str | None = None
    ) -> None:
        from sesemi.compat import hydra as hydra_compat

        self.over = over  # e.g. run.seed: at the end, each group of points differing only there, mean ± std

        self.basic = hydra_compat.BasicSweeper(max_batch_size=max_batch_size, params=params)
        # BasicSweeper.sweep checks each batch with its own validate_batch_is_legal: this sweeper's, one per shape.
        self.basic.validate_batch_is_legal = self.validate_batch_is_legal  # type: ignore[method-assign]

    @property
    def hydra_context(self) -> Any:  # type: ignore[override]
        return self.basic.hydra_context

    @property
    def config(self) -> Any:  # type: ignore[override]
        return self.basic.config

    @property
    def launcher(self) -> Any:  # type: ignore[override]
        return self.basic.launcher

    def setup(self, *, hydra_context: Any, task_function: Any, config: Any) -> None:
        self.basic.setup(hydra_context=hydra_context, task_function=task_function, config=config)
        expect_results(self.launcher, False)

    def sweep(self, arguments: list[str]) -> Any:
        returns = self.basic.sweep(arguments)
        if self.over and not capabilities_of(self.launcher).detached:
            self._print_groups()
        return returns

    def _print_groups(self) -> None:
        """The grid's points grouped over ``over`` (the seeds), as ``python -m sesemi.cluster.summary --over`` prints
        them, and into ``<sweep dir>/summary_over.md``."""
        sweep = SweepDir(Path(str(self.config.hydra.sweep.dir)))
        dirs = run_dirs(sweep.path)
        table = format_groups(group_over(dirs, str(self.over)), str(self.over), objective_name(dirs))
        path = sweep.write_grouped(table)
        print(f"\nsesemi: the grid over {self.over} ({path}):\n{table}", end="", flush=True)

    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        shapes = {shape(overrides): overrides for overrides in batch}
        super().validate_batch_is_legal(list(shapes.values()))
