"""sesemi.sweep.study on real journal studies: budget tickets, lost trials failed and retried with their parameters,
the failure rate and fatal errors, waiting trials of an old search space dropped."""

from __future__ import annotations

import time
from pathlib import Path

import optuna
from optuna.trial import TrialState

from sesemi.compat import optuna as compat
from sesemi.sweep import storage as storage_lib
from sesemi.sweep import study as study_lib
from sesemi.sweep.heartbeat import Heartbeat


def journal_study(tmp_path: Path, direction: str = "maximize") -> optuna.Study:
    return optuna.create_study(
        study_name="s",
        storage=storage_lib.make_storage(None, tmp_path),
        direction=direction,
        sampler=optuna.samplers.RandomSampler(seed=0),
    )


def test_tickets_fill_the_budget_and_count_old_trials(tmp_path: Path):
    study = journal_study(tmp_path)
    assert study_lib.top_up(study, 3) == 3
    trial = study_lib.pop_trial(study)
    study_lib.suggest(trial, {"x": optuna.distributions.FloatDistribution(0, 1)})
    study.tell(trial, 0.5)
    assert study_lib.top_up(study, 3) == 0  # 1 done + 2 waiting
    assert study_lib.top_up(study, 5) == 2  # a bigger budget adds only the difference
    popped = [study_lib.pop_trial(study) for _ in range(4)]
    assert [t.number for t in popped] == [1, 2, 3, 4]
    assert study_lib.pop_trial(study) is None  # workers never create trials beyond the budget
    assert len(study.get_trials()) == 5


def test_a_trial_lost_before_its_training_started_is_failed_and_retried_with_its_parameters(tmp_path: Path):
    study = journal_study(tmp_path)
    study_lib.top_up(study, 1)
    trial = study_lib.pop_trial(study)
    study_lib.suggest(trial, {"x": optuna.distributions.FloatDistribution(0, 1)})
    trial.set_user_attr("run_dir", str(tmp_path / "trial_0000"))  # never made: its job died before training
    # Someone else's running trial with a fresh heartbeat is left alone.
    study_lib.top_up(study, 2)
    other = study_lib.pop_trial(study)
    with Heartbeat(study, [compat.trial_id(other)], interval=0.2):
        time.sleep(1.5)  # trial 0 sends no heartbeat
        assert study_lib.reap_stale(study, grace_period=1.0, max_retries=1) == [0]
    trials = study.get_trials()
    assert trials[0].state == TrialState.FAIL and "before its training started" in trials[0].user_attrs["error"]
    assert trials[1].state == TrialState.RUNNING
    retry = trials[2]
    assert retry.state == TrialState.WAITING and compat.enqueued_params(retry) == trials[0].params
    assert retry.user_attrs["retry_history"] == [0]
    assert len(study_lib.counted(trials)) == 2  # the retry stands in for the lost trial
    # The retry is taken like a ticket and keeps its parameters.
    again = study_lib.pop_trial(study)
    assert (
        again.number == 2
        and study_lib.suggest(again, {"x": optuna.distributions.FloatDistribution(0, 1)}) == trials[0].params
    )
    # Lost again: max_retries=1 is used up.
    with Heartbeat(study, [compat.trial_id(other)], interval=0.2):
        time.sleep(1.5)
        assert study_lib.reap_stale(study, grace_period=1.0, max_retries=1) == [2]
    assert not study_lib.waiting(study)


def test_failure_rate_and_fatal_errors(tmp_path: Path):
    study = journal_study(tmp_path)
    study_lib.top_up(study, 4)
    for i in range(2):
        trial = study_lib.pop_trial(study)
        trial.set_user_attr("session", "s1")
        study_lib.fail_trial(study, compat.trial_id(trial), f"boom {i}")
        reason = study_lib.check_failures(study, "s1", n_trials=4, max_failure_rate=0.25)
        assert (reason is None) == (i == 0)
    assert "boom 1" in reason
    assert study_lib.check_failures(study, "s2", n_trials=4, max_failure_rate=0.25) is None  # a new run starts afresh
    trial = study_lib.pop_trial(study)
    trial.set_user_attr("session", "s3")
    study_lib.fail_trial(study, compat.trial_id(trial), "ConfigError: run.objective", fatal=True)
    assert "every trial would hit" in study_lib.check_failures(study, "s3", n_trials=4, max_failure_rate=1.0)
    assert trial.number not in [t.number for t in study_lib.counted(study.get_trials())]  # budget given back


def test_waiting_trials_of_an_old_search_space_are_dropped_not_counted(tmp_path: Path):
    study = journal_study(tmp_path)
    study.enqueue_trial({"optimizer.lrr": 0.1}, user_attrs={"retry_history": [0]})  # a retry with a misspelt key
    study.enqueue_trial({"optimizer.lr": 0.1})
    assert study_lib.drop_stale_waiting(study, {"optimizer.lr"}) == [0]
    trials = study.get_trials()
    assert trials[0].state == TrialState.FAIL and "optimizer.lrr" in trials[0].user_attrs["error"]
    assert study_lib.top_up(study, 2) == 1  # the dropped one gives its place back
