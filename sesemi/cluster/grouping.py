"""A grid's points grouped over a key (``run.seed``): each group's mean ± standard deviation of the objective.

A grid such as ``-m optimizer.lr=0.01,0.1 run.seed=0,1,2`` runs every learning rate with three seeds; grouped over
``run.seed``, the points that differ only in their seed make one row: the learning rate, how many seeds completed,
the mean and the spread of ``run.objective`` (what each run's ``metrics.json`` records). The grid sweeper prints this
table at the end of a sweep with ``hydra.sweeper.over=run.seed``; ``python -m sesemi.cluster.summary <sweep dir>
--over run.seed`` prints it at any time (a detached grid too).
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import yaml

from sesemi.rundir import HYDRA_DIR, STATUS_FILE, read_metrics, read_objective


@dataclass
class Group:
    point: str  # the overrides the group's runs share (the grouped key left out)
    values: list[float]  # the objective of each completed run
    runs: int  # runs in the group, completed or not

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.values) if self.values else None

    @property
    def std(self) -> float | None:
        return statistics.stdev(self.values) if len(self.values) > 1 else (0.0 if self.values else None)


def run_dirs(sweep_dir: Path) -> list[Path]:
    """The run dirs of a sweep: every dir with a ``status.json`` one or two levels below it."""
    found = [*sweep_dir.glob(f"*/{STATUS_FILE}"), *sweep_dir.glob(f"*/*/{STATUS_FILE}")]
    return sorted({p.parent for p in found})


def _overrides(run_dir: Path) -> list[str]:
    try:
        return [str(o) for o in yaml.safe_load((run_dir / HYDRA_DIR / "overrides.yaml").read_text()) or []]
    except (OSError, yaml.YAMLError):
        return []


def group_over(run_dirs: Iterable[Path], key: str) -> list[Group]:
    """The runs grouped by their overrides other than ``key`` (and ``hydra.*``), in the order first seen."""
    groups: dict[str, Group] = {}
    for run_dir in run_dirs:
        kept = [o for o in _overrides(run_dir) if o.split("=", 1)[0].lstrip("+~") != key and not o.startswith("hydra.")]
        point = " ".join(kept)
        group = groups.setdefault(point, Group(point, [], 0))
        group.runs += 1
        value = read_objective(run_dir)
        if value is not None:
            group.values.append(value)
    return list(groups.values())


def objective_name(run_dirs: Iterable[Path]) -> str:
    """The objective's name as the runs' ``metrics.json`` records it (``objective`` when none completed)."""
    for run_dir in run_dirs:
        name = ((read_metrics(run_dir) or {}).get("objective") or {}).get("name")
        if name:
            return str(name)
    return "objective"


def format_groups(groups: list[Group], key: str, objective: str = "objective") -> str:
    """A Markdown table: one row per group (the overrides that tell it from the others), its completed runs of
    all, and the objective's mean ± std."""
    common = set.intersection(*(set(g.point.split()) for g in groups)) if len(groups) > 1 else set()
    lines = [f"| point | runs ({key}) | {objective} mean ± std |", "|---|---|---|"]
    for g in groups:
        point = " ".join(o for o in g.point.split() if o not in common)
        shown = "-" if g.mean is None else f"{g.mean:.4f} ± {g.std:.4f}"
        lines.append(f"| {point or '(none)'} | {len(g.values)}/{g.runs} | {shown} |")
    return "\n".join(lines) + "\n"
