"""sesemi.compat.optuna against the installed Optuna: fails loudly, by name, when upstream moves a private API the
sweeper relies on (the sweeper's Hydra internals: tests/compat/test_hydra.py)."""

from __future__ import annotations

from pathlib import Path

import optuna
from optuna.trial import TrialState

from sesemi.compat import optuna as compat
from sesemi.sweep.storage import make_storage


def test_optuna_internals(tmp_path: Path):
    study = optuna.create_study(study_name="c", storage=make_storage(None, tmp_path))
    assert compat.pop_waiting(study) is None  # takes, never creates
    study.enqueue_trial({"x": 0.5})
    trial_id = compat.pop_waiting(study)
    assert trial_id is not None and compat.frozen(study, trial_id).state == TrialState.RUNNING
    trial = optuna.Trial(study, trial_id)
    assert compat.trial_id(trial) == trial_id == compat.trial_id_of_number(study, trial.number)
    assert compat.enqueued_params(compat.frozen(study, trial_id)) == {"x": 0.5}
    compat.set_trial_attr(study, trial_id, "k", 1)
    assert compat.frozen(study, trial_id).user_attrs["k"] == 1
    assert compat.finish(study, trial_id, TrialState.FAIL)
    assert not compat.finish(study, trial_id, TrialState.FAIL)  # once only
