"""sesemi's submitit launchers (Hydra plugins, registered through the ``hydra.plugins`` entry point).

``hydra/launcher=slurm|slurm_cpu|local`` select them. They are hydra-submitit-launcher's ``SlurmLauncher`` /
``LocalLauncher`` with, in ``launch()``:

1. every sweep job's config composed first and its resolved ``hydra.launcher`` checked against its ``run`` config
   (:mod:`sesemi.cluster.validate`): a mismatch stops the sweep before anything is submitted, naming the keys;
2. jobs grouped by their resources (a sweep over ``run.devices`` asks SLURM for different tasks/GPUs per job),
   one job array per group;
3. ``hydra.launcher.dry_run=true``: the plan (resources, the sbatch script, each job's overrides and run dir) is
   printed and nothing is submitted;
4. ``jobs.json`` written at submission, then the results collected without letting one failed job hide the others,
   and the summary table printed and written to ``summary.md``/``summary.csv`` in the sweep dir.

In the job (``__call__``), ranks > 0 neither copy ``.hydra/`` nor open the job's log file (rank 0's), and once the
task returned normally, a late preemption signal no longer requeues the finished job.

Validation happens here rather than in a resolver of the config: it needs each *sweep job's* config (the master
config of a multirun does not see the sweep's values, e.g. ``run.devices=1,2``), and a launcher is the one place
that sees them all before submission.
"""

from __future__ import annotations

import json
import logging
import shlex
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides, run_job, setup_globals
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf, LocalQueueConf, SlurmQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import BaseSubmititLauncher
from omegaconf import OmegaConf, open_dict

from sesemi.cluster import summary
from sesemi.cluster.validate import check_job
from sesemi.errors import ConfigError

log = logging.getLogger("sesemi.cluster")

# Keys of sesemi's launcher schemas that are not submitit parameters.
SESEMI_KEYS = ("_target_", "profile", "dry_run")


@dataclass
class SesemiSlurmQueueConf(SlurmQueueConf):
    """hydra-submitit-launcher's ``submitit_slurm`` schema plus sesemi's keys."""

    _target_: str = "sesemi.cluster.launcher.SlurmLauncher"
    # Relative paths are below the sweep dir (${hydra.sweep.dir} here would claim a second sweep dir).
    submitit_folder: str = ".submitit/%j"
    profile: str = "gpu"  # gpu | cpu: which resources this profile may request (checked before submission)
    dry_run: bool = False  # print what would be submitted, submit nothing


@dataclass
class SesemiLocalQueueConf(LocalQueueConf):
    _target_: str = "sesemi.cluster.launcher.LocalLauncher"
    submitit_folder: str = ".submitit/%j"
    profile: str = "local"
    dry_run: bool = False


ConfigStore.instance().store(
    group="hydra/launcher", name="sesemi_submitit_slurm", node=SesemiSlurmQueueConf, provider="sesemi"
)
ConfigStore.instance().store(
    group="hydra/launcher", name="sesemi_submitit_local", node=SesemiLocalQueueConf, provider="sesemi"
)


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


@dataclass
class _JobPlan:
    num: int
    overrides: list[str]
    params: dict[str, Any]
    run_dir: Path
    problems: list[ConfigError] = field(default_factory=list)
    handle: Any = None


class _SesemiSubmititLauncher(BaseSubmititLauncher):
    _EXECUTOR = "abstract"

    def __init__(self, **params: Any) -> None:
        self.profile = str(params.pop("profile", "gpu"))
        self.dry_run = bool(params.pop("dry_run", False))
        super().__init__(**params)

    # ----------------------------------------------------------------------------------------------- job side
    def __call__(
        self,
        sweep_overrides: list[str],
        job_dir_key: str,
        job_num: int,
        job_id: str,
        singleton_state: dict[type, Singleton],
    ) -> JobReturn:
        import submitit
        from lightning_utilities.core.rank_zero import rank_zero_only

        assert self.hydra_context is not None and self.config is not None and self.task_function is not None
        env = submitit.JobEnvironment()
        rank = env.global_rank
        rank_zero_only.rank = rank  # before anything logs or writes: SLURM_PROCID is not set for local tasks
        Singleton.set_state(singleton_state)
        setup_globals()
        sweep_config = self.hydra_context.config_loader.load_sweep_config(self.config, list(sweep_overrides))
        with open_dict(sweep_config.hydra.job) as job:
            job.id = env.job_id
            sweep_config.hydra.job.num = job_num
        if rank > 0:
            with open_dict(sweep_config.hydra):
                sweep_config.hydra.output_subdir = None  # .hydra/ is rank 0's
        ret = run_job(
            hydra_context=self.hydra_context,
            task_function=self.task_function,
            config=sweep_config,
            job_dir_key=job_dir_key,
            job_subdir_key="hydra.sweep.subdir",
            configure_logging=rank == 0,  # the job's log file is rank 0's; other ranks log to their stderr
        )
        # The task returned: from now on a preemption/time-limit signal must not requeue (and rerun) the job.
        signal.signal(submitit.JobEnvironment._usr_sig(), signal.SIG_IGN)
        return ret

    # -------------------------------------------------------------------------------------------- submit side
    def _plan(self, overrides: Sequence[str], num: int, sweep_dir: Path) -> _JobPlan:
        assert self.hydra_context is not None and self.config is not None
        config = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
        with open_dict(config.hydra.job):
            config.hydra.job.num = num
        params = OmegaConf.to_container(config.hydra.launcher, resolve=True)
        assert isinstance(params, dict)
        for key in SESEMI_KEYS:
            params.pop(key, None)
        run = {k: OmegaConf.select(config, f"run.{k}") for k in ("devices", "num_nodes", "accelerator", "strategy")}
        run_dir = sweep_dir / str(OmegaConf.select(config, "hydra.sweep.subdir"))
        problems = check_job(params, run, profile=self.profile, executor=self._EXECUTOR)
        return _JobPlan(num, list(overrides), params, run_dir, problems)

    def _executor(self, params: dict[str, Any], sweep_dir: Path) -> Any:
        import submitit

        params = dict(params)
        folder = Path(str(params.pop("submitit_folder")))
        if not folder.is_absolute():
            folder = sweep_dir / folder
        init: dict[str, Any] = {"folder": str(folder)}
        for key in ("max_num_timeout", "python"):
            if key in params:
                value = params.pop(key)
                if value is not None:
                    init[f"{self._EXECUTOR}_{key}"] = value
        executor = submitit.AutoExecutor(cluster=self._EXECUTOR, **init)
        base = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(**{k if k in base else f"{self._EXECUTOR}_{k}": v for k, v in params.items()})
        return executor

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        assert self.config is not None
        sweep_dir = Path(str(self.config.hydra.sweep.dir)).absolute()
        plans = [self._plan(o, initial_job_idx + i, sweep_dir) for i, o in enumerate(job_overrides)]
        problems = [(p.num, p.overrides, err) for p in plans for err in p.problems]
        if problems:
            self._discard_empty_sweep_dir(sweep_dir)
            error = LaunchConfigError(problems)
            print(f"sesemi: error: {error}", file=sys.stderr, flush=True)
            raise SystemExit(2)
        groups: dict[str, list[_JobPlan]] = {}
        for plan in plans:
            groups.setdefault(json.dumps(plan.params, sort_keys=True, default=str), []).append(plan)

        if self.dry_run:
            print(self._dry_run_text(sweep_dir, list(groups.values())), end="", flush=True)
            self._discard_empty_sweep_dir(sweep_dir)
            raise SystemExit(0)

        sweep_dir.mkdir(parents=True, exist_ok=True)
        for group in groups.values():
            executor = self._executor(group[0].params, sweep_dir)
            args = [
                (p.overrides, "hydra.sweep.dir", p.num, f"job_id_for_{p.num}", Singleton.get_state()) for p in group
            ]
            handles = executor.map_array(self, *zip(*args))
            for plan, handle in zip(group, handles):
                plan.handle = handle
        self._write_jobs(sweep_dir, plans)
        self._announce(sweep_dir, plans)

        returns: list[JobReturn] = []
        errors: dict[int, str] = {}
        for plan in plans:
            try:
                ret = plan.handle.results()[0]
            except Exception as err:  # noqa: BLE001 - the job failed outside the task: report it, go on
                ret = JobReturn(overrides=plan.overrides, status=JobStatus.FAILED)
                ret.return_value = err
                errors[plan.num] = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
            if ret.status == JobStatus.FAILED and plan.num not in errors:
                err = ret._return_value
                errors[plan.num] = f"{type(err).__name__}: {err}"
            returns.append(ret)
        self._summarize(sweep_dir, plans, errors)
        return returns

    # ---------------------------------------------------------------------------------------------- reporting
    def _job_files(self, plan: _JobPlan) -> dict[str, str]:
        if plan.handle is None:
            return {"job_id": "", "stdout": "", "stderr": ""}
        paths = plan.handle._sub_jobs[0].paths if getattr(plan.handle, "_sub_jobs", None) else plan.handle.paths
        return {"job_id": str(plan.handle.job_id), "stdout": str(paths.stdout), "stderr": str(paths.stderr)}

    def _write_jobs(
        self,
        sweep_dir: Path,
        plans: list[_JobPlan],
        errors: dict[int, str] | None = None,
        states: dict[int, str] | None = None,
    ) -> None:
        """``jobs.json``: every job of the sweep so far (sweepers like Optuna launch several batches)."""
        path = sweep_dir / summary.JOBS_FILE
        previous = json.loads(path.read_text())["jobs"] if path.is_file() else []
        current = {p.num for p in plans}
        jobs = [j for j in previous if j["num"] not in current]
        for p in plans:
            job = {"num": p.num, **self._job_files(p), "run_dir": str(p.run_dir), "overrides": p.overrides}
            if errors and p.num in errors:
                job["error"] = errors[p.num]
            if states and p.num in states:
                job["job_state"] = states[p.num]  # the scheduler's state when the launcher saw the job end
            jobs.append(job)
        data = {"executor": self._EXECUTOR, "sweep_dir": str(sweep_dir), "jobs": sorted(jobs, key=lambda j: j["num"])}
        path.write_text(json.dumps(data, indent=2) + "\n")

    def _announce(self, sweep_dir: Path, plans: list[_JobPlan]) -> None:
        ids = ", ".join(str(p.handle.job_id) for p in plans)
        folder = Path(self._job_files(plans[0])["stdout"]).parent.parent
        log.info(
            f"sesemi: submitted {len(plans)} job(s) [{ids}] ({self._EXECUTOR}); run dirs {sweep_dir}/<job num>; "
            f"job logs {folder}/<job id>/. Waiting for them; interrupting here leaves them running, and "
            f"`python -m sesemi.cluster.summary {sweep_dir}` tells their state at any time."
        )

    def _summarize(self, sweep_dir: Path, plans: list[_JobPlan], errors: dict[int, str]) -> None:
        states: dict[int, str] = {}
        if self._EXECUTOR == "slurm":
            # Every job of this batch returned (or failed): give SLURM a moment to record their end.
            by_id = summary.sacct_states((str(p.handle.job_id) for p in plans), settle_s=20)
            states = {p.num: by_id[str(p.handle.job_id)] for p in plans if str(p.handle.job_id) in by_id}
        for plan in plans:
            if plan.num not in states:
                try:
                    states[plan.num] = str(plan.handle.state)
                except Exception:  # noqa: BLE001
                    states[plan.num] = "UNKNOWN"
        self._write_jobs(sweep_dir, plans, errors, states)
        jobs = json.loads((sweep_dir / summary.JOBS_FILE).read_text())["jobs"]
        current = {p.num for p in plans}
        earlier: dict[str, str] = {}
        if self._EXECUTOR == "slurm":
            earlier = summary.sacct_states(j["job_id"] for j in jobs if j["num"] not in current)
        rows = [summary.job_row(j, earlier.get(str(j["job_id"])) or j.get("job_state"), j.get("error")) for j in jobs]
        batch = [row for row in rows if row["job"] in current]
        csv_path, md_path = summary.write(sweep_dir, rows)
        text = summary.format_table(batch)
        more = f" (this batch; all {len(rows)} jobs of the sweep are in it)" if len(rows) > len(batch) else ""
        print(f"\nsesemi: sweep summary{more} ({md_path}, {csv_path.name}):\n{text}", flush=True)

    def _dry_run_text(self, sweep_dir: Path, groups: list[list[_JobPlan]]) -> str:
        n_jobs = sum(len(g) for g in groups)
        lines = [
            f"sesemi dry run: {n_jobs} job(s) in {len(groups)} submission(s) to {self._EXECUTOR}; nothing submitted.",
            f"sweep dir: {sweep_dir}",
        ]
        for i, group in enumerate(groups, 1):
            params = group[0].params
            executor = self._executor(params, sweep_dir)
            nums = [p.num for p in group]
            kind = "job array" if len(group) > 1 else "job"
            lines.append("")
            lines.append(f"== submission {i}/{len(groups)}: {kind} of {len(group)} (sweep jobs {nums}) ==")
            shown = {k: v for k, v in sorted(params.items()) if v not in (None, [], {}) or k == "partition"}
            lines.append("resources: " + " ".join(f"{k}={v}" for k, v in shown.items()))
            script = self._script(executor, len(group))
            if script:
                lines.append("sbatch script:")
                lines.extend(f"    {line}" for line in script.rstrip().splitlines())
            lines.append("jobs:")
            for plan in group:
                task = " ".join(shlex.quote(o) for o in filter_overrides(plan.overrides))
                lines.append(f"  #{plan.num}: {task or '(no overrides)'}")
                lines.append(f"      run dir: {plan.run_dir}")
                lines.append(f"      config as: python -m sesemi.train {task}".rstrip())
        return "\n".join(lines) + "\n"

    def _script(self, executor: Any, n: int) -> str | None:
        return None

    @staticmethod
    def _discard_empty_sweep_dir(sweep_dir: Path) -> None:
        """A dry run or a refused sweep leaves no sweep dir behind (Hydra already wrote multirun.yaml into it)."""
        if not sweep_dir.is_dir() or any(p.name != "multirun.yaml" for p in sweep_dir.iterdir()):
            return
        (sweep_dir / "multirun.yaml").unlink(missing_ok=True)
        stop = Path.cwd().absolute()
        path = sweep_dir
        while path != stop and stop in path.parents:
            try:
                path.rmdir()
            except OSError:
                break
            path = path.parent


class SlurmLauncher(_SesemiSubmititLauncher):
    _EXECUTOR = "slurm"

    def _script(self, executor: Any, n: int) -> str | None:
        from submitit.slurm.slurm import SlurmExecutor

        inner = executor._executor
        assert isinstance(inner, SlurmExecutor)
        preview = SlurmExecutor(inner.folder, inner.max_num_timeout, python=inner.python)
        preview.update_parameters(**inner.parameters)
        if n > 1:
            preview.parameters["map_count"] = n
        return preview._make_submission_file_text(preview._submitit_command_str, "dry-run")


class LocalLauncher(_SesemiSubmititLauncher):
    _EXECUTOR = "local"


__all__ = ["LaunchConfigError", "LocalLauncher", "SlurmLauncher"]
