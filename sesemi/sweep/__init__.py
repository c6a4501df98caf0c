"""Hyperparameter sweeps with Optuna (``hydra/sweeper=optuna_sync`` / ``optuna_async``) and plain grids
(``hydra/sweeper=grid``, the default of ``-m``); see docs/sweeps.md.

The sweeper side (this process):

- :mod:`sesemi.sweep.sweeper`: the Optuna sweeper plugin; :mod:`sesemi.sweep.grid`: the grid sweeper plugin.
- :mod:`sesemi.sweep.opening`: the search space checked, the study opened or resumed, brought to the budget.
- :mod:`sesemi.sweep.sync` / :mod:`sesemi.sweep.asynchronous`: the two modes' loops.
- :mod:`sesemi.sweep.launching`: the launcher (asked what it can do) or local processes.
- :mod:`sesemi.sweep.workers`: asynchronous worker slots, each replaced at once when it ends while trials wait.
- :mod:`sesemi.sweep.progress`: what the sweeper logs and reaps while its jobs run.

The job side (where trials run):

- :mod:`sesemi.sweep.task`: the task function a job runs (a trial, a worker).
- :mod:`sesemi.sweep.trial`: one trial: its overrides, its training with the trial callback, its outcome.
- :mod:`sesemi.sweep.worker`: an asynchronous worker's loop over trials.
- :mod:`sesemi.sweep.callback`: the Lightning callback that reports, prunes and logs TensorBoard hparams.
- :mod:`sesemi.sweep.stop`: a worker that got SIGTERM takes no new trial; its trial continues from its checkpoint.

Shared: :mod:`sesemi.sweep.settings` (what every process needs), :mod:`sesemi.sweep.study` (budget, tickets,
heartbeats, retries, failure rate), :mod:`sesemi.sweep.space` (the search space), :mod:`sesemi.sweep.storage`
(journal file or database), :mod:`sesemi.sweep.report` (``python -m sesemi.sweep_report``).

Optuna and Hydra internals are used only through :mod:`sesemi.compat.optuna` and :mod:`sesemi.compat.hydra`.
Kept free of imports: Hydra loads the sweeper plugins at every start-up.
"""
