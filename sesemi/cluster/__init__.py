"""Cluster launching around hydra-submitit-launcher: ``python -m sesemi.train -m hydra/launcher=slurm ...``.

- :mod:`sesemi.cluster.launcher`: the ``slurm``/``slurm_cpu``/``local`` launchers (Hydra plugins): they check each
  sweep job's resources against its run config before anything is submitted, group jobs with equal resources into
  job arrays, print the plan instead with ``hydra.launcher.dry_run=true``, and end with a summary table (or return
  at once with ``hydra.launcher.wait=false``).
- :mod:`sesemi.cluster.schemas`: the launchers' config schemas (imported only when the ``cluster`` extra is there).
- :mod:`sesemi.cluster.tracking`: every job's state from its run dir and ``sacct`` (``python -m sesemi.status``).
- :mod:`sesemi.cluster.resubmit`: ``python -m sesemi.status SWEEP_DIR --resubmit``: failed points again.
- :mod:`sesemi.cluster.requeue`: preemption and time limits: checkpoint, mark the run ``requeued``, requeue, and
  resume in the same run dir.
- :mod:`sesemi.cluster.summary`: the sweep summary (also ``python -m sesemi.cluster.summary SWEEP_DIR``).
- :mod:`sesemi.cluster.validate`: the resource checks.
- :mod:`sesemi.cluster.ranks`: one DDP rank of a local sweep job
  (started by :func:`sesemi.launch.train_in_rank_processes`).

This package is imported by Hydra's plugin discovery on every start: keep its module level free of torch/Lightning.
"""
