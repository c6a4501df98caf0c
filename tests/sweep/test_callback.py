"""sesemi.sweep.callback: the trial callback reports each validation's objective to its trial, refuses an objective the
run does not log, prunes by stopping training as at its end, and never prunes the last step."""

from __future__ import annotations

from types import SimpleNamespace

import optuna
import pytest

from sesemi.errors import ConfigError
from sesemi.sweep.callback import OptunaTrialCallback, TrialContext


def test_callback_reports_and_rejects_an_unlogged_objective():
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.ThresholdPruner(lower=0.5))
    trial = study.ask()
    context = TrialContext(trial=trial, monitor="val/acc", params={})
    callback = OptunaTrialCallback(context)

    def trainer(metrics: dict, step: int) -> SimpleNamespace:
        return SimpleNamespace(
            callback_metrics=metrics,
            sanity_checking=False,
            global_step=step,
            global_rank=0,
            world_size=1,
            max_steps=100,
            should_stop=False,
        )

    callback.on_validation_end(trainer({"val/acc": 0.9, "val/loss": 0.1}, 10), None)
    assert study.trials[0].intermediate_values == {10: 0.9}
    with pytest.raises(ConfigError, match=r"run.objective: 'val/acc' is not logged.*are \['val/loss'\]"):
        callback.on_validation_end(trainer({"val/loss": 0.1}, 20), None)
    with pytest.raises(FloatingPointError):
        callback.on_validation_end(trainer({"val/acc": float("nan")}, 30), None)
    # Pruned: training stops as at its end (checkpoints, metrics.json), no exception; the runner records PRUNED.
    at_40 = trainer({"val/acc": 0.2}, 40)
    callback.on_validation_end(at_40, None)
    assert at_40.should_stop and context.pruned == "pruned at step 40 with val/acc = 0.2000"
    context.pruned = None
    at_100 = trainer({"val/acc": 0.2}, 100)
    callback.on_validation_end(at_100, None)  # the last step completes, never pruned
    assert not at_100.should_stop and context.pruned is None
