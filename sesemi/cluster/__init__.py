"""Where a run runs: cluster launching, the environment's decisions, signals. Core (``sesemi.train.train``,
builders, module, data...) never imports this package; the entry points ask it and hand core a
:class:`sesemi.runtime.Runtime`.

- :mod:`sesemi.cluster.environment`: the Lightning strategy and plugins for where the process runs (single run,
  in-process sweep, SLURM tasks, submitit local tasks), and :func:`~sesemi.cluster.environment.runtime_for`.
- :mod:`sesemi.cluster.signals`: one signal mechanism, local and on SLURM: USR2 (time limit, preemption warning),
  SIGTERM (``scancel``, ``scontrol requeue``, ``kill``) and SIGINT (Ctrl-C) checkpoint at the end of the step and
  record ``requeued``/``cancelled``/``interrupted``; a requeued job resumes in the same run dir.
- :mod:`sesemi.cluster.job`: the process every submitit job starts as; it holds submitit's preemption/time-limit
  signal from the first instant until submitit's own handler exists (``python -m sesemi.cluster.job ...``).
- :mod:`sesemi.cluster.ranks`: DDP rank processes of a multi-device job inside an in-process sweep.
- :mod:`sesemi.cluster.launcher`: the ``slurm``/``slurm_cpu``/``local`` launchers (Hydra plugins): they check each
  sweep job's resources against its run config before anything is submitted, group jobs with equal resources into
  job arrays, print the plan instead with ``hydra.launcher.dry_run=true``, and end with a summary table (or return
  at once with ``hydra.launcher.wait=false``).
- :mod:`sesemi.cluster.schemas`: the launchers' config schemas (imported only when the ``cluster`` extra is there).
- :mod:`sesemi.cluster.tracking`: every job's state from its run dir and ``sacct`` (``python -m sesemi.status``).
- :mod:`sesemi.cluster.resubmit`: ``python -m sesemi.status SWEEP_DIR --resubmit``: failed points again.
- :mod:`sesemi.cluster.summary`: the sweep summary (also ``python -m sesemi.cluster.summary SWEEP_DIR``).
- :mod:`sesemi.cluster.validate`: the resource checks.

This package is imported by Hydra's plugin discovery on every start: keep its module level free of torch/Lightning.
"""
