"""sesemi.compat.optuna / sesemi.compat.hydra against the installed libraries: fails loudly, by name, when upstream
moves a private API the sweeper relies on."""

from __future__ import annotations

from pathlib import Path

import optuna
from hydra.core.utils import JobReturn, JobStatus
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from sesemi.compat import hydra as hydra_compat
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


def test_hydra_internals():
    distributions, fixed, other = hydra_compat.search_space(
        ["a=tag(log, interval(0.01, 1.0))", "b=choice(1, 2)", "c=range(16, 65, 16)", "d=3", "~e"]
    )
    assert isinstance(distributions["a"], FloatDistribution) and distributions["a"].log
    assert isinstance(distributions["b"], CategoricalDistribution)
    assert isinstance(distributions["c"], IntDistribution) and fixed == {"d": "3"} and other == ["~e"]
    assert hydra_compat.grid_choices(distributions["c"]) == [16, 32, 48, 64]
    failed = JobReturn(status=JobStatus.FAILED, _return_value=ValueError("boom"))
    assert isinstance(hydra_compat.job_error(failed), ValueError)
    assert hydra_compat.job_error(JobReturn(status=JobStatus.COMPLETED, _return_value=1.0)) is None
