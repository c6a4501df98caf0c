"""Hyperparameter sweeps with Optuna (``hydra/sweeper=optuna_sync`` / ``optuna_async``); see docs/sweeps.md.

- :mod:`sesemi.sweep.sweeper`: the Hydra sweeper plugin (synchronous batches or asynchronous workers).
- :mod:`sesemi.sweep.runner`: what runs a trial or a worker's loop where the trials run.
- :mod:`sesemi.sweep.study`: budget, tickets, heartbeats, retries, failure rate.
- :mod:`sesemi.sweep.callback`: the Lightning callback that reports, prunes and logs TensorBoard hparams.
- :mod:`sesemi.sweep.storage`: journal file (default) or database storage, password from the environment.
- :mod:`sesemi.sweep.report`: ``python -m sesemi.sweep_report <sweep dir or storage>``.

Kept free of imports: Hydra loads the sweeper plugin at every start-up.
"""
