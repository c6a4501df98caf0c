"""sesemi's submitit launchers (Hydra plugins, registered through the ``hydra.plugins`` entry point).

``hydra/launcher=slurm|slurm_cpu|local`` select them. They run sweep jobs through submitit as
hydra-submitit-launcher does (same schema, same job side), with, in ``launch()``:

1. every sweep job's config composed first and its resolved ``hydra.launcher`` checked against its ``run`` config
   (:mod:`sesemi.cluster.validate`): a mismatch stops the sweep before anything is submitted, naming the keys;
2. jobs grouped by their resources (a sweep over ``run.devices`` asks SLURM for different tasks/GPUs per job),
   one job array per group, named after the sweep and its job numbers;
3. ``hydra.launcher.dry_run=true``: the plan (resources, the sbatch script, each job's overrides and run dir) is
   printed and nothing is submitted;
4. ``jobs.json`` written at submission; ``hydra.launcher.wait=false`` stops there (detached: follow the jobs with
   ``python -m sesemi.status``); otherwise the launcher follows every job until SLURM says it ended (a requeued job
   is waited for until its last attempt), collects the results without letting one failed job hide the others,
   and prints the summary table (also written to ``summary.md``/``summary.csv`` in the sweep dir). Ctrl-C while
   waiting says what keeps running and how to follow or cancel it.

In the job (``__call__``), ranks > 0 neither copy ``.hydra/`` nor open the job's log file (rank 0's), and once the
task returned normally, a late preemption signal no longer requeues the finished job.

Validation happens here rather than in a resolver of the config: it needs each *sweep job's* config (the master
config of a multirun does not see the sweep's values, e.g. ``run.devices=1,2``), and a launcher is the one place
that sees them all before submission.

submitit and hydra-submitit-launcher are the optional ``cluster`` extra: this module (loaded by Hydra's plugin
discovery on every start) imports neither at module level, and choosing one of these launchers without them is
one ``sesemi: error:`` line naming the extra.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import signal
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf, open_dict

from sesemi.cluster import summary
from sesemi.cluster.validate import check_job
from sesemi.compat.hydra import (
    JobReturn,
    JobStatus,
    Launcher,
    filter_overrides,
    job_error,
    load_sweep_config,
    restore_singletons,
    run_job,
    setup_globals,
    singleton_state,
)
from sesemi.errors import ConfigError
from sesemi.rundir import write_json

log = logging.getLogger("sesemi.cluster")

# Keys of sesemi's launcher schemas that are not submitit parameters.
SESEMI_KEYS = ("_target_", "profile", "dry_run", "wait")
RUN_KEYS = ("devices", "num_nodes", "accelerator", "strategy")  # the run values checked against the resources
CLUSTER_EXTRA = "pip install 'sesemi[cluster]'"
_BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"
_SESEMI_OPTUNA = "sesemi.sweep.sweeper.OptunaSweeper"


def _detachable(config: Any) -> bool:
    """Sweeps whose jobs need nobody waiting for them: Hydra's basic sweeper (every point known at submission) and
    sesemi's asynchronous Optuna sweeper (its workers take the trials themselves)."""
    target = OmegaConf.select(config, "hydra.sweeper._target_")
    mode = OmegaConf.select(config, "hydra.sweeper.mode", default=None)
    return target == _BASIC_SWEEPER or (target == _SESEMI_OPTUNA and mode == "async")


def _missing_extra() -> str | None:
    """The missing package of the ``cluster`` extra, or None when it is installed."""
    try:
        from sesemi.cluster import schemas
    except ModuleNotFoundError as err:
        if err.name and err.name.split(".")[0] in ("hydra_plugins", "submitit"):
            return "hydra-submitit-launcher"
        raise
    schemas.register()
    try:
        import submitit  # noqa: F401
    except ModuleNotFoundError:
        return "submitit"
    return None


MISSING_EXTRA = _missing_extra()
if MISSING_EXTRA:
    # Placeholders, so that `hydra/launcher=slurm` still composes and the launcher can say what to install.
    for _name, _target, _profile in (
        ("sesemi_submitit_slurm", "SlurmLauncher", "gpu"),
        ("sesemi_submitit_local", "LocalLauncher", "local"),
    ):
        ConfigStore.instance().store(
            group="hydra/launcher",
            name=_name,
            node={"_target_": f"sesemi.cluster.launcher.{_target}", "profile": _profile},
            provider="sesemi",
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


def _exit_with(error: ConfigError | str, code: int = 2) -> None:
    print(f"sesemi: error: {error}", file=sys.stderr, flush=True)
    raise SystemExit(code)


@dataclass
class _JobPlan:
    num: int
    overrides: list[str]
    params: dict[str, Any]
    run_dir: Path
    problems: list[ConfigError] = field(default_factory=list)
    handle: Any = None


def make_executor(executor_kind: str, params: dict[str, Any], sweep_dir: Path) -> Any:
    """A submitit ``AutoExecutor`` for one job's resolved ``hydra.launcher`` parameters (sesemi's keys removed)."""
    import submitit

    from sesemi.cluster.schemas import BASE_KEYS
    from sesemi.compat import submitit as compat_submitit

    params = dict(params)
    folder = Path(str(params.pop("submitit_folder")))
    if not folder.is_absolute():
        folder = sweep_dir / folder
    init: dict[str, Any] = {"folder": str(folder)}
    for key in ("max_num_timeout", "python"):
        value = params.pop(key, None)
        if value is not None:
            init[f"{executor_kind}_{key}"] = value
    executor = submitit.AutoExecutor(cluster=executor_kind, **init)
    compat_submitit.start_jobs_with(executor, "sesemi.cluster.job")
    executor.update_parameters(**{k if k in BASE_KEYS else f"{executor_kind}_{k}": v for k, v in params.items()})
    return executor


# The sweep dir's jobs.json and summary are read, changed and written again by each launch() of the sweep; the
# asynchronous sweeper calls launch() from one thread per worker slot (sesemi.sweep.workers), at the same time.
_SWEEP_FILES = threading.RLock()


class _SesemiSubmititLauncher(Launcher):
    _EXECUTOR = "abstract"

    def __init__(self, **params: Any) -> None:
        if MISSING_EXTRA:
            _exit_with(
                ConfigError(
                    "hydra/launcher",
                    f"the slurm, slurm_cpu and local launchers need submitit and hydra-submitit-launcher "
                    f"({MISSING_EXTRA} is not installed)",
                    f"{CLUSTER_EXTRA}",
                )
            )
        self.profile = str(params.get("profile", "gpu"))
        self.dry_run = bool(params.get("dry_run", False))
        self.wait = bool(params.get("wait", True))
        self.config: Any = None
        self.hydra_context: Any = None
        self.task_function: Any = None
        self._compositions: dict[tuple[str, ...], tuple[dict[str, Any], dict[str, Any]]] = {}
        self._references: set[str] | None = None

    def setup(self, *, hydra_context: Any, task_function: Any, config: Any) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.task_function = task_function

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """submitit's requeue hook: the same call again (same sweep job, same run dir)."""
        import submitit

        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)

    # ----------------------------------------------------------------------------------------------- job side
    def __call__(
        self,
        sweep_overrides: list[str],
        job_dir_key: str,
        job_num: int,
        job_id: str,
        singletons: dict[type, Any],
    ) -> JobReturn:
        import submitit
        from lightning_utilities.core.rank_zero import rank_zero_only

        from sesemi.cluster import job as job_process

        job_process.hand_over()  # a signal that came while the process started: submitit handles it now
        assert self.hydra_context is not None and self.config is not None and self.task_function is not None
        env = submitit.JobEnvironment()
        rank = env.global_rank
        rank_zero_only.rank = rank  # before anything logs or writes: SLURM_PROCID is not set for local tasks
        restore_singletons(singletons)
        setup_globals()
        sweep_config = load_sweep_config(self.hydra_context, self.config, sweep_overrides)
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
        signal.signal(job_process.submitit_signal(), signal.SIG_IGN)
        return ret

    # -------------------------------------------------------------------------------------------- submit side
    def _plan(self, overrides: Sequence[str], num: int, sweep_dir: Path) -> _JobPlan:
        """A job's resolved resources, checked run values and run dir, from its composed config.

        Composing a config costs tens of milliseconds (more on a busy login node), and Hydra's sweeper already
        composes every point once; so points whose overrides differ only in keys that can change none of these
        (e.g. ``optimizer.lr``, ``run.seed``) share one composition: see :meth:`_relevant`.
        """
        assert self.hydra_context is not None and self.config is not None
        relevant = self._relevant(overrides)
        key = None if relevant is None else tuple(relevant)
        if key is None or key not in self._compositions:
            config = load_sweep_config(self.hydra_context, self.config, overrides if key is None else relevant)
            with open_dict(config.hydra.job):
                config.hydra.job.num = num
            params = OmegaConf.to_container(config.hydra.launcher, resolve=True)
            assert isinstance(params, dict)
            for name in SESEMI_KEYS:
                params.pop(name, None)
            run = {k: OmegaConf.select(config, f"run.{k}") for k in RUN_KEYS}
            subdir = str(OmegaConf.select(config, "hydra.sweep.subdir"))
            if key is None:
                return self._checked(num, overrides, params, run, sweep_dir / subdir)
            self._compositions[key] = (params, run)
        params, run = self._compositions[key]
        return self._checked(num, overrides, dict(params), run, sweep_dir / str(num))

    def _checked(
        self, num: int, overrides: Sequence[str], params: dict[str, Any], run: dict[str, Any], run_dir: Path
    ) -> _JobPlan:
        problems = check_job(params, run, profile=self.profile, executor=self._EXECUTOR)
        return _JobPlan(num, list(overrides), params, run_dir, problems)

    def _relevant(self, overrides: Sequence[str]) -> list[str] | None:
        """The overrides of a job that can change its resources, checked run values or run dir; None: any may.

        Those are config group choices, ``hydra.*``, the checked ``run.*`` keys and every key that
        ``hydra.launcher`` or those run keys interpolate (one level deep). None when the run dir is not simply the
        job number (``hydra.sweep.subdir`` changed: it may name the overrides).
        """
        assert self.config is not None
        if self._references is None:
            sweep = OmegaConf.to_container(self.config.hydra.sweep, resolve=False)
            run = OmegaConf.to_container(self.config.run, resolve=False) if "run" in self.config else {}
            text = json.dumps(OmegaConf.to_container(self.config.hydra.launcher, resolve=False), default=str)
            text += json.dumps({k: run.get(k) for k in RUN_KEYS}, default=str)  # type: ignore[union-attr]
            refs = {f"run.{k}" for k in RUN_KEYS} | set(re.findall(r"\$\{([\w.]+)\}", text))
            self._references = refs if sweep.get("subdir") == "${hydra.job.num}" else set()  # type: ignore[union-attr]
        names = [o.split("=", 1)[0].lstrip("+~") for o in overrides]
        if not self._references or any(n.startswith(("hydra.sweep", "hydra.job")) for n in names):
            return None  # the run dir may depend on the overrides (e.g. an Optuna trial's hydra.sweep.subdir)

        def matters(override: str) -> bool:
            name = override.split("=", 1)[0].lstrip("+~").split("@")[0]
            if name.startswith("hydra") or "." not in name or "/" in name or "@" in override.split("=", 1)[0]:
                return True
            return any(name == r or name.startswith(r + ".") or r.startswith(name + ".") for r in self._references)

        return [o for o in overrides if matters(o)]

    def _sweep_name(self) -> str:
        """What the sweep's jobs are named after: the Optuna study, else ``run.id``."""
        name = OmegaConf.select(self.config, "hydra.sweeper.study_name", default=None)
        return str(name or OmegaConf.select(self.config, "run.id", default=None) or "sesemi")

    def _group(self, plans: list[_JobPlan]) -> list[list[_JobPlan]]:
        """One submission (a job array) per set of resources; unnamed jobs named ``<sweep>.<first>-<last>``."""
        groups: dict[str, list[_JobPlan]] = {}
        for plan in plans:
            groups.setdefault(json.dumps(plan.params, sort_keys=True, default=str), []).append(plan)
        sweep = self._sweep_name()
        for group in groups.values():
            nums = [p.num for p in group]
            name = f"{sweep}.{nums[0]}" if len(nums) == 1 else f"{sweep}.{nums[0]}-{nums[-1]}"
            for plan in group:
                if plan.params.get("name") is None:
                    plan.params["name"] = name
        return list(groups.values())

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        assert self.config is not None
        sweep_dir = Path(str(self.config.hydra.sweep.dir)).absolute()
        plans = [self._plan(o, initial_job_idx + i, sweep_dir) for i, o in enumerate(job_overrides)]
        problems = [(p.num, p.overrides, err) for p in plans for err in p.problems]
        if not self.wait and not _detachable(self.config):
            self._discard_empty_sweep_dir(sweep_dir)
            _exit_with(
                ConfigError(
                    "hydra.launcher.wait",
                    "is false, but this sweeper chooses its next points from the results of earlier jobs, so the "
                    "submitting process has to wait for them",
                    "leave hydra.launcher.wait=true for this sweeper (detached sweeps: a grid, -m key=a,b,c, or "
                    "hydra/sweeper=optuna_async)",
                )
            )
        if problems:
            self._discard_empty_sweep_dir(sweep_dir)
            _exit_with(LaunchConfigError(problems))
        groups = self._group(plans)
        if self.dry_run:
            print(self._dry_run_text(sweep_dir, groups), end="", flush=True)
            self._discard_empty_sweep_dir(sweep_dir)
            raise SystemExit(0)

        sweep_dir.mkdir(parents=True, exist_ok=True)
        for group in groups:
            self.submit(group, sweep_dir)
        self._write_jobs(sweep_dir, plans)
        if not self.wait:
            self._announce_detached(sweep_dir, plans)
            return []
        self._announce(sweep_dir, plans)
        try:
            self._follow(plans)
        except KeyboardInterrupt:
            self._interrupted(sweep_dir, plans)
        return self._collect(sweep_dir, plans)

    def submit(self, group: list[_JobPlan], sweep_dir: Path, extra: Sequence[str] = ()) -> None:
        """Submit one group of jobs with equal resources as one job array (``extra``: overrides appended)."""
        executor = make_executor(self._EXECUTOR, group[0].params, sweep_dir)
        args = [
            ([*p.overrides, *extra], "hydra.sweep.dir", p.num, f"job_id_for_{p.num}", singleton_state()) for p in group
        ]
        handles = executor.map_array(self, *zip(*args))
        for plan, handle in zip(group, handles):
            plan.handle = handle

    # ------------------------------------------------------------------------------------------------ waiting
    def _follow(self, plans: list[_JobPlan], poll_s: float = 2.0) -> None:
        """Until every job ended: for SLURM, until sacct says so (a job requeued after a failed attempt already has
        a result file, which is all submitit's own wait looks at); for local jobs, until submitit says so."""
        waiting = list(plans)
        while waiting:
            states = summary.sacct_states(str(p.handle.job_id) for p in waiting) if self._EXECUTOR == "slurm" else {}
            waiting = [p for p in waiting if not self._ended(p, states.get(str(p.handle.job_id)))]
            if waiting:
                time.sleep(poll_s)
                poll_s = min(poll_s * 1.5, 15.0)

    @staticmethod
    def _ended(plan: _JobPlan, slurm_state: str | None) -> bool:
        if slurm_state is not None:
            return slurm_state in summary.ENDED
        return bool(plan.handle.done())  # the local executor, or no record in sacct (yet)

    def _collect(self, sweep_dir: Path, plans: list[_JobPlan]) -> list[JobReturn]:
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
                err = job_error(ret)
                errors[plan.num] = f"{type(err).__name__}: {err}"
            returns.append(ret)
        self._summarize(sweep_dir, plans, errors)
        return returns

    def _interrupted(self, sweep_dir: Path, plans: list[_JobPlan]) -> None:
        """Ctrl-C while waiting: the jobs are not this process's; say so and how to follow or cancel them."""
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut this message short
        ids = sorted({str(p.handle.job_id).split("_")[0] for p in plans})
        where = os.path.relpath(sweep_dir)
        if self._EXECUTOR == "slurm":
            lines = [
                f"sesemi: interrupted; stopped waiting. The {len(plans)} job(s) keep running on SLURM "
                f"({', '.join(str(p.handle.job_id) for p in plans[:8])}{' ...' if len(plans) > 8 else ''}), "
                f"each in its run dir below {where}.",
                f"  follow them: python -m sesemi.status {where} --wait",
                f"  cancel them: scancel {' '.join(ids)}",
            ]
        else:
            lines = [
                f"sesemi: interrupted; stopped waiting. The {len(plans)} local job(s) run in this terminal's "
                f"process group, so a Ctrl-C there reaches them too; each has its run dir below {where}.",
                f"  their state: python -m sesemi.status {where}",
            ]
        print("\n" + "\n".join(lines), file=sys.stderr, flush=True)
        raise SystemExit(130)

    # ---------------------------------------------------------------------------------------------- reporting
    def _job_files(self, plan: _JobPlan) -> dict[str, str]:
        from sesemi.compat.submitit import job_paths

        if plan.handle is None:
            return {"job_id": "", "stdout": "", "stderr": ""}
        paths = job_paths(plan.handle)
        return {"job_id": str(plan.handle.job_id), "stdout": str(paths.stdout), "stderr": str(paths.stderr)}

    def _write_jobs(
        self,
        sweep_dir: Path,
        plans: list[_JobPlan],
        errors: dict[int, str] | None = None,
        states: dict[int, str] | None = None,
    ) -> None:
        """``jobs.json``: every job of the sweep so far (sweepers like Optuna launch several batches).

        Each entry also keeps the job's resolved resources (``params``) and the launch dir, so that
        ``python -m sesemi.status --resubmit`` can submit a point again as it was.
        """
        with _SWEEP_FILES:
            path = sweep_dir / summary.JOBS_FILE
            previous = json.loads(path.read_text())["jobs"] if path.is_file() else []
            current = {p.num for p in plans}
            jobs = [j for j in previous if j["num"] not in current]
            earlier = {j["num"]: j for j in previous if j["num"] in current}
            now = datetime.now(timezone.utc).isoformat(timespec="seconds")
            for p in plans:
                job = {
                    "num": p.num,
                    **self._job_files(p),
                    "run_dir": str(p.run_dir),
                    "overrides": p.overrides,
                    "params": p.params,
                    "submitted": earlier.get(p.num, {}).get("submitted", now),
                }
                if "previous_job_ids" in earlier.get(p.num, {}):
                    job["previous_job_ids"] = earlier[p.num]["previous_job_ids"]
                if errors and p.num in errors:
                    job["error"] = errors[p.num]
                if states and p.num in states:
                    job["job_state"] = states[p.num]  # the scheduler's state when the launcher saw the job end
                jobs.append(job)
            data = {
                "executor": self._EXECUTOR,
                "profile": self.profile,
                "sweep_dir": str(sweep_dir),
                "launch_dir": os.getcwd(),
                "jobs": sorted(jobs, key=lambda j: j["num"]),
            }
            write_json(path, data)

    def _folder(self, plans: list[_JobPlan]) -> Path:
        return Path(self._job_files(plans[0])["stdout"]).parent.parent

    def _announce(self, sweep_dir: Path, plans: list[_JobPlan]) -> None:
        ids = ", ".join(str(p.handle.job_id) for p in plans[:8]) + (" ..." if len(plans) > 8 else "")
        log.info(
            f"sesemi: submitted {len(plans)} job(s) [{ids}] ({self._EXECUTOR}); run dirs {self._run_dirs(plans)}; "
            f"job logs {self._folder(plans)}/<job id>/. Waiting for them; Ctrl-C here leaves them running, and "
            f"`python -m sesemi.status {os.path.relpath(sweep_dir)}` tells their state at any time."
        )

    @staticmethod
    def _run_dirs(plans: list[_JobPlan]) -> str:
        """The jobs' run dirs as they are (a sweeper may name them, e.g. ``trial_7`` or ``workers/<session>/w0``)."""
        if all(p.run_dir.name == str(p.num) for p in plans):
            return f"{plans[0].run_dir.parent}/<job num>"
        shown = ", ".join(os.path.relpath(p.run_dir) for p in plans[:4])
        return shown + (f" and {len(plans) - 4} more" if len(plans) > 4 else "")

    def _announce_detached(self, sweep_dir: Path, plans: list[_JobPlan]) -> None:
        where = os.path.relpath(sweep_dir)
        ids = ", ".join(str(p.handle.job_id) for p in plans[:8])
        ids += f" and {len(plans) - 8} more" if len(plans) > 8 else ""
        print(
            f"sesemi: submitted {len(plans)} job(s) to {self._EXECUTOR}: {ids}; not waiting "
            "(hydra.launcher.wait=false).\n"
            f"  jobs, run dirs and logs: {where}/{summary.JOBS_FILE}\n"
            f"  follow them:   python -m sesemi.status {where} --wait\n"
            f"  resubmit what failed: python -m sesemi.status {where} --resubmit",
            flush=True,
        )

    def _summarize(self, sweep_dir: Path, plans: list[_JobPlan], errors: dict[int, str]) -> None:
        states: dict[int, str] = {}
        if self._EXECUTOR == "slurm":
            by_id = summary.sacct_states(str(p.handle.job_id) for p in plans)
            states = {p.num: by_id[str(p.handle.job_id)] for p in plans if str(p.handle.job_id) in by_id}
        for plan in plans:
            if plan.num not in states:
                try:
                    states[plan.num] = str(plan.handle.state)
                except Exception:  # noqa: BLE001
                    states[plan.num] = "UNKNOWN"
        with _SWEEP_FILES:
            self._write_jobs(sweep_dir, plans, errors, states)
            jobs = json.loads((sweep_dir / summary.JOBS_FILE).read_text())["jobs"]
            current = {p.num for p in plans}
            earlier: dict[str, str] = {}
            if self._EXECUTOR == "slurm":
                earlier = summary.sacct_states(j["job_id"] for j in jobs if j["num"] not in current)
            rows = [
                summary.job_row(j, earlier.get(str(j["job_id"])) or j.get("job_state"), j.get("error")) for j in jobs
            ]
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
            nums = [p.num for p in group]
            kind = "job array" if len(group) > 1 else "job"
            lines.append("")
            lines.append(f"== submission {i}/{len(groups)}: {kind} of {len(group)} (sweep jobs {nums}) ==")
            shown = {k: v for k, v in sorted(params.items()) if v not in (None, [], {}) or k == "partition"}
            lines.append("resources: " + " ".join(f"{k}={v}" for k, v in shown.items()))
            script = self._script(make_executor(self._EXECUTOR, params, sweep_dir), len(group))
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
        from sesemi.compat.submitit import sbatch_script

        return sbatch_script(executor, n)


class LocalLauncher(_SesemiSubmititLauncher):
    _EXECUTOR = "local"


__all__ = ["LaunchConfigError", "LocalLauncher", "SlurmLauncher", "make_executor"]
