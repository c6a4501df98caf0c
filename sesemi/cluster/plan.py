"""The plan of a launch: each job's resources, checked run values and run dir, and the job arrays they form.

Everything a job needs to fail early is decided here, before anything is submitted: each job's resolved
``hydra.launcher`` is checked against its ``run`` config (:mod:`sesemi.cluster.validate`), and a mismatch stops the
sweep naming the keys and the jobs. Jobs with equal resources form one job array, named after the sweep and its
job numbers.

Composing a job's config costs tens of milliseconds (more on a busy login node), so jobs whose overrides differ
only in keys that can change none of the planned values (``optimizer.lr``, ``run.seed``...) share one composition:
a sweep over 2,000 seeds composes once. Each job still composes its own full config where it runs.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from sesemi.cluster.packing import Packing
from sesemi.cluster.validate import check_job
from sesemi.compat.hydra import filter_overrides, load_sweep_config
from sesemi.errors import ConfigError
from sesemi.sweepdir import WORKERS_DIR

# Keys of sesemi's launcher schemas that are not submitit parameters.
SESEMI_KEYS = ("_target_", "profile", "dry_run", "wait", "snapshot", "points_per_job", "point_gpus", "point_threads")
RUN_KEYS = ("devices", "num_nodes", "accelerator", "strategy")  # the run values checked against the resources


@dataclass
class JobPlan:
    num: int
    overrides: list[str]
    params: dict[str, Any]  # the resolved hydra.launcher, sesemi's own keys removed: submitit's parameters
    run_dir: Path
    problems: list[ConfigError] = field(default_factory=list)
    handle: Any = None  # the submitit job (a packed job's point: its PackedPoint), once submitted
    packing: Packing = field(default_factory=Packing)  # points per job and how they share it


class LaunchConfigError(ConfigError):
    """Sweep jobs whose resources do not fit their run config: every problem, with the sweep jobs it concerns."""

    def __init__(self, problems: list[tuple[int, Sequence[str], ConfigError]]) -> None:
        first = problems[0][2]
        super().__init__(first.key, first.problem, first.fix)
        by_message: dict[str, list[tuple[int, Sequence[str]]]] = {}
        for num, overrides, err in problems:
            by_message.setdefault(str(err), []).append((num, overrides))
        lines = ["the sweep's resources do not fit its run config; nothing was submitted:"]
        for message, jobs in by_message.items():
            if len(jobs) == 1:
                num, overrides = jobs[0]
                where = f"sweep job #{num} [{' '.join(filter_overrides(overrides)) or 'no overrides'}]"
            else:
                where = "sweep jobs " + ", ".join(f"#{num}" for num, _ in jobs)
            lines.append(f"  {where}: {message}")
        self.args = ("\n".join(lines),)

    def __str__(self) -> str:
        return self.args[0]


class Planner:
    """Plans the jobs of one sweep (its master ``config``) for a launcher of ``executor`` kind and ``profile``."""

    def __init__(self, hydra_context: Any, config: DictConfig, *, executor: str, profile: str) -> None:
        self.hydra_context = hydra_context
        self.config = config
        self.executor = executor
        self.profile = profile
        self._compositions: dict[tuple[str, ...], tuple[dict[str, Any], dict[str, Any], Any]] = {}
        self._references: set[str] | None = None

    def plan(self, overrides: Sequence[str], num: int, sweep_dir: Path) -> JobPlan:
        """A job's resolved resources, checked run values and run dir, from its (or an equivalent job's) config."""
        relevant = self.relevant(overrides)
        key = None if relevant is None else tuple(relevant)
        if key is None or key not in self._compositions:
            config = load_sweep_config(self.hydra_context, self.config, overrides if key is None else relevant)
            with open_dict(config.hydra.job):
                config.hydra.job.num = num
            params = OmegaConf.to_container(config.hydra.launcher, resolve=True)
            assert isinstance(params, dict)
            try:
                packing: Packing | ConfigError = Packing.of(params)
            except ConfigError as err:
                packing = err
            for name in SESEMI_KEYS:
                params.pop(name, None)
            run = {k: OmegaConf.select(config, f"run.{k}") for k in RUN_KEYS}
            if key is None:
                subdir = str(OmegaConf.select(config, "hydra.sweep.subdir"))
                return self._checked(num, overrides, params, run, sweep_dir / subdir, packing)
            self._compositions[key] = (params, run, packing)
        params, run, packing = self._compositions[key]
        return self._checked(num, overrides, dict(params), run, sweep_dir / str(num), packing)

    def _checked(
        self,
        num: int,
        overrides: Sequence[str],
        params: dict[str, Any],
        run: dict[str, Any],
        run_dir: Path,
        packing: Packing | ConfigError,
    ) -> JobPlan:
        if isinstance(packing, ConfigError):
            return JobPlan(num, list(overrides), params, run_dir, [packing])
        problems = check_job(
            params, run, profile=self.profile, executor=self.executor, points_per_job=packing.points_per_job
        )
        return JobPlan(num, list(overrides), params, run_dir, problems, packing=packing)

    def relevant(self, overrides: Sequence[str]) -> list[str] | None:
        """The overrides of a job that can change its resources, checked run values or run dir; None: any may.

        Those are config group choices, ``hydra.*``, the checked ``run.*`` keys and every key that
        ``hydra.launcher`` or those run keys interpolate (one level deep). None when the run dir is not simply the
        job number (``hydra.sweep.subdir`` changed: it may name the overrides).
        """
        references = self._referenced_keys()
        names = [o.split("=", 1)[0].lstrip("+~") for o in overrides]
        if not references or any(n.startswith(("hydra.sweep", "hydra.job")) for n in names):
            return None  # the run dir may depend on the overrides (e.g. an Optuna trial's hydra.sweep.subdir)

        def matters(override: str) -> bool:
            name = override.split("=", 1)[0].lstrip("+~").split("@")[0]
            if name.startswith("hydra") or "." not in name or "/" in name or "@" in override.split("=", 1)[0]:
                return True
            return any(name == r or name.startswith(r + ".") or r.startswith(name + ".") for r in references)

        return [o for o in overrides if matters(o)]

    def _referenced_keys(self) -> set[str]:
        if self._references is None:
            sweep = OmegaConf.to_container(self.config.hydra.sweep, resolve=False)
            run = OmegaConf.to_container(self.config.run, resolve=False) if "run" in self.config else {}
            text = json.dumps(OmegaConf.to_container(self.config.hydra.launcher, resolve=False), default=str)
            text += json.dumps({k: run.get(k) for k in RUN_KEYS}, default=str)  # type: ignore[union-attr]
            refs = {f"run.{k}" for k in RUN_KEYS} | set(re.findall(r"\$\{([\w.]+)\}", text))
            self._references = refs if sweep.get("subdir") == "${hydra.job.num}" else set()  # type: ignore[union-attr]
        return self._references


def sweep_name(config: DictConfig) -> str:
    """What a sweep's jobs are named after: the Optuna study, else ``run.id``."""
    name = OmegaConf.select(config, "hydra.sweeper.study_name", default=None)
    return str(name or OmegaConf.select(config, "run.id", default=None) or "sesemi")


def group(plans: list[JobPlan], sweep: str) -> list[list[JobPlan]]:
    """One submission (a job array) per set of resources and packing; unnamed jobs named
    ``<sweep>.<first>-<last>``."""
    groups: dict[str, list[JobPlan]] = {}
    for plan in plans:
        key = json.dumps([plan.params, vars(plan.packing)], sort_keys=True, default=str)
        groups.setdefault(key, []).append(plan)
    for members in groups.values():
        nums = [p.num for p in members]
        name = f"{sweep}.{nums[0]}" if len(nums) == 1 else f"{sweep}.{nums[0]}-{nums[-1]}"
        for plan in members:
            if plan.params.get("name") is None:
                plan.params["name"] = name
    return list(groups.values())


def problems_of(plans: list[JobPlan]) -> LaunchConfigError | None:
    problems = [(p.num, p.overrides, err) for p in plans for err in p.problems]
    return LaunchConfigError(problems) if problems else None


def packed_workers(plans: list[JobPlan], sweep_dir: Path) -> ConfigError | None:
    """The error for an asynchronous sweep's workers packed several to a job (None: not so). A worker is a
    long-lived job that runs trial after trial, launched and replaced one at a time; several trials per job are
    a synchronous sweep's (each batch's trials packed K to a job)."""
    packed = [p for p in plans if p.packing.points_per_job > 1]
    if not any(p.run_dir.is_relative_to(sweep_dir / WORKERS_DIR) for p in packed):
        return None
    return ConfigError(
        "hydra.launcher.points_per_job",
        f"is {packed[0].packing.points_per_job}, but the asynchronous sweeper's workers are long-lived jobs that run "
        "one trial after the other, one worker per job",
        "pack trials with hydra/sweeper=optuna_sync (each batch of hydra.sweeper.n_jobs trials, K per job), or run "
        "more workers (hydra.sweeper.workers) with hydra.launcher.points_per_job=1",
    )
