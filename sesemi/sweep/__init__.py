"""Hyperparameter sweeps with Optuna (``hydra/sweeper=optuna_sync`` / ``optuna_async``); see docs/sweeps.md.

- :mod:`sesemi.sweep.sweeper`: the Hydra sweeper plugin (synchronous batches, or the asynchronous worker pool).
- :mod:`sesemi.sweep.space`: the search space, parsed as Hydra's Optuna sweeper does and checked before any trial.
- :mod:`sesemi.sweep.workers`: asynchronous workers, each replaced at once when it ends while trials wait.
- :mod:`sesemi.sweep.progress`: what the sweeper logs and reaps while its jobs run.
- :mod:`sesemi.sweep.runner`: what runs a trial or a worker's loop where the trials run (per-trial sampler seeds).
- :mod:`sesemi.sweep.stop`: a worker that got SIGTERM takes no new trial; its trial is retried.
- :mod:`sesemi.sweep.study`: budget, tickets, heartbeats, retries, failure rate.
- :mod:`sesemi.sweep.callback`: the Lightning callback that reports, prunes and logs TensorBoard hparams.
- :mod:`sesemi.sweep.storage`: journal file (default) or database storage, password from the environment.
- :mod:`sesemi.sweep.local`: parallel local processes where Hydra's basic launcher would run jobs one by one.
- :mod:`sesemi.sweep.report`: ``python -m sesemi.sweep_report <sweep dir or storage>``.

Optuna and Hydra internals are used only through :mod:`sesemi.compat.optuna` and :mod:`sesemi.compat.hydra`.
Kept free of imports: Hydra loads the sweeper plugin at every start-up.
"""
