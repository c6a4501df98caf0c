"""sesemi's submitit launchers (Hydra plugins, registered through the ``hydra.plugins`` entry point).

``hydra/launcher=slurm|slurm_cpu|local`` select them. Like hydra-submitit-launcher, a launcher is three methods:
``setup``, ``launch`` (the submit side) and ``__call__`` (the job side, in the job's process); the parts between are
modules of their own:

- :mod:`sesemi.cluster.plan`: every job's resources, run values and run dir, checked before anything is submitted
  (a mismatch stops the sweep naming the keys), and the job arrays (one per set of resources);
- :mod:`sesemi.cluster.submission`: submitit executors and job arrays;
- :mod:`sesemi.cluster.packing`: several points per job (``hydra.launcher.points_per_job``), their job side;
- :mod:`sesemi.cluster.snapshot`: the code and configs the jobs run, copied at submission
  (``hydra.launcher.snapshot``);
- :mod:`sesemi.sweepdir`: ``jobs.json``, written at submission;
- :mod:`sesemi.cluster.follow` and :mod:`sesemi.cluster.messages`: waiting for the jobs (``hydra.launcher.wait``),
  the summary, the dry run (``hydra.launcher.dry_run=true``), Ctrl-C;
- :mod:`sesemi.cluster.job_runner`: the job side's one Hydra job.

Validation happens at launch rather than in a resolver of the config: it needs each *sweep job's* config (the
master config of a multirun does not see the sweep's values, e.g. ``run.devices=1,2``), and a launcher is the one
place that sees them all before submission.
"""

from __future__ import annotations

import signal
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from sesemi.cluster import follow, messages, snapshot, submission, validate
from sesemi.cluster.capabilities import LaunchCapabilities
from sesemi.cluster.job_runner import HydraJob, run
from sesemi.cluster.plan import JobPlan, Planner, group, packed_workers, problems_of, sweep_name
from sesemi.compat.hydra import JobReturn, Launcher, singleton_state
from sesemi.errors import ConfigError, exit_with
from sesemi.sweepdir import SweepDir

MISSING_EXTRA = submission.missing_extra()
if MISSING_EXTRA:
    # Placeholders, so that `hydra/launcher=slurm` still composes and the launcher can say what to install.
    for _name, _target, _profile in (
        ("sesemi_submitit_slurm", "SlurmLauncher", "gpu"),
        ("sesemi_submitit_local", "LocalLauncher", "local"),
    ):
        ConfigStore.instance().store(
            group="hydra/launcher",
            name=_name,
            node={"_target_": f"hydra_plugins.sesemi_plugins.{_target}", "profile": _profile},
            provider="sesemi",
        )


class _SesemiSubmititLauncher(Launcher):
    EXECUTOR = "abstract"

    def __init__(self, **params: Any) -> None:
        if MISSING_EXTRA:
            exit_with(
                ConfigError(
                    "hydra/launcher",
                    f"the slurm, slurm_cpu and local launchers need submitit and hydra-submitit-launcher "
                    f"({MISSING_EXTRA} is not installed)",
                    submission.CLUSTER_EXTRA,
                )
            )
        self.profile = str(params.get("profile", "gpu"))
        self.dry_run = bool(params.get("dry_run", False))
        self.wait = bool(params.get("wait", True))
        self.snapshot = bool(params.get("snapshot", True))
        self.code: snapshot.Snapshot | None = None  # taken once per sweep command: every batch runs the same code
        self.results_needed: bool | None = None  # told by a sesemi sweeper; None: a sweeper that says nothing
        self.config: Any = None
        self.hydra_context: Any = None
        self.task_function: Any = None
        self.planner: Planner | None = None

    def setup(self, *, hydra_context: Any, task_function: Any, config: Any) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.task_function = task_function
        self.planner = Planner(hydra_context, config, executor=self.EXECUTOR, profile=self.profile)

    # ------------------------------------------------------------------------------ what sweepers may ask
    def capabilities(self) -> LaunchCapabilities:
        return LaunchCapabilities(processes=True, slurm=self.EXECUTOR == "slurm", detached=not self.wait)

    def expect_results(self, needed: bool) -> None:
        self.results_needed = needed

    # ---------------------------------------------------------------------------------------------- job side
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
        env = submitit.JobEnvironment()
        rank_zero_only.rank = env.global_rank  # before anything logs or writes: SLURM_PROCID is unset for local tasks
        job = HydraJob(
            self.hydra_context, self.config, self.task_function, sweep_overrides, job_num, env.job_id, singletons
        )
        ret = run(job, rank=env.global_rank)
        # The task returned: from now on a preemption/time-limit signal must not requeue (and rerun) the job.
        signal.signal(job_process.submitit_signal(), signal.SIG_IGN)
        return ret

    # ------------------------------------------------------------------------------------------- submit side
    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        assert self.config is not None and self.planner is not None
        sweep = SweepDir(Path(str(self.config.hydra.sweep.dir)).absolute())
        plans = [self.planner.plan(o, initial_job_idx + i, sweep.path) for i, o in enumerate(job_overrides)]
        if not self.wait and self.results_needed is not False:
            sweep.discard_if_empty(stop=Path.cwd())
            exit_with(
                ConfigError(
                    "hydra.launcher.wait",
                    "is false, but this sweeper chooses its next points from the results of earlier jobs, so the "
                    "submitting process has to wait for them",
                    "leave hydra.launcher.wait=true for this sweeper (detached sweeps: a grid, -m key=a,b,c, or "
                    "hydra/sweeper=optuna_async)",
                )
            )
        problems = problems_of(plans) or packed_workers(plans, sweep.path)
        if problems is not None:
            sweep.discard_if_empty(stop=Path.cwd())
            exit_with(problems)
        chosen = str(OmegaConf.select(self.config, "hydra.runtime.choices", default={}).get("hydra/launcher", "slurm"))
        missing = validate.missing_slurm_commands(chosen, self.dry_run) if self.EXECUTOR == "slurm" else None
        if missing is not None:
            sweep.discard_if_empty(stop=Path.cwd())
            exit_with(missing)
        groups = group(plans, sweep_name(self.config))
        if self.dry_run:
            print(messages.dry_run_text(self.EXECUTOR, sweep.path, groups), end="", flush=True)
            sweep.discard_if_empty(stop=Path.cwd())
            raise SystemExit(0)

        sweep.path.mkdir(parents=True, exist_ok=True)
        if self.snapshot and self.code is None:
            try:
                self.code = snapshot.take(sweep.path, OmegaConf.select(self.config, "run.src_dir"))
            except ConfigError as err:
                exit_with(err)
        for members in groups:
            self.submit(members, sweep.path)
        sweep.record_jobs(
            [submission.ledger_entry(p, code=self.code) for p in plans], executor=self.EXECUTOR, profile=self.profile
        )
        if not self.wait:
            messages.announce_detached(self.EXECUTOR, sweep.path, plans)
            return []
        messages.announce(self.EXECUTOR, sweep.path, plans)
        try:
            follow.follow(plans, self.EXECUTOR)
        except KeyboardInterrupt:
            follow.interrupted(sweep, plans, self.EXECUTOR)
        returns, errors = follow.collect(plans)
        follow.summarize(sweep, plans, errors, executor_kind=self.EXECUTOR, profile=self.profile, code=self.code)
        return returns

    def submit(self, group: list[JobPlan], sweep_dir: Path) -> None:
        """Submit one group of jobs with equal resources as job arrays: this launcher pickled once for all (K
        points per job with ``hydra.launcher.points_per_job=K``)."""
        folder = sweep_dir / Path(str(group[0].params["submitit_folder"])).parent
        job = submission.shared_job(self, singleton_state(), folder)
        packing = group[0].packing
        submission.submit(
            self.EXECUTOR,
            job if packing.points_per_job == 1 else submission.PackedJob(Path(job.payload), packing),
            group,
            sweep_dir,
            lambda p: (p.overrides, "hydra.sweep.dir", p.num, f"job_id_for_{p.num}"),
            code=self.code,
            per_job=packing.points_per_job,
        )


class SlurmLauncher(_SesemiSubmititLauncher):
    EXECUTOR = "slurm"


class LocalLauncher(_SesemiSubmititLauncher):
    EXECUTOR = "local"


__all__ = ["LocalLauncher", "SlurmLauncher"]
