"""Pareto dominance, the front, picking a trial from it, and the multi-objective pruner: the rule on made-up
curves, then a small study run through ask/tell in real storages (a journal file, SQLite, PostgreSQL when the local
server runs), read back as another process would."""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from optuna.storages import JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend
from optuna.study import StudyDirection
from optuna.trial import TrialState, create_trial

from sesemi.sweep.pareto import (
    INTERMEDIATE,
    ParetoPruner,
    best_within,
    closest_to_ideal,
    dominates,
    intermediate_vectors,
    non_dominated,
    report_vector,
    should_prune,
    vector_at,
)

ACC_TIME = ["maximize", "minimize"]  # accuracy up, step time down
POSTGRES = "postgresql+psycopg2://sesemi:sesemi@127.0.0.1:5432/sesemi_optuna"  # scripts/postgres.sh's local server


def test_dominance_follows_each_objectives_direction():
    assert dominates([0.9, 1.0], [0.8, 2.0], ACC_TIME)
    assert not dominates([0.8, 2.0], [0.9, 1.0], ACC_TIME)
    assert not dominates([0.95, 3.0], [0.9, 1.0], ACC_TIME)  # more accurate but slower: a trade-off
    assert not dominates([0.9, 1.0], [0.9, 1.0], ACC_TIME)  # equal: neither is better
    assert dominates([0.9, 1.0], [0.9, 1.5], ACC_TIME)  # as good in one, better in the other
    directions = [StudyDirection.MINIMIZE, StudyDirection.MINIMIZE]  # loss and time, both down
    assert dominates([0.1, 1.0], [0.2, 1.0], directions) and not dominates([0.2, 1.0], [0.1, 1.0], directions)
    assert dominates([0.5, 1.0], [math.nan, 0.5], ACC_TIME) and not dominates([math.nan, 0.5], [0.5, 1.0], ACC_TIME)
    with pytest.raises(ValueError, match="unknown direction"):
        dominates([1.0], [0.0], ["up"])
    with pytest.raises(ValueError, match="for 2 objectives"):
        dominates([1.0], [0.0], ACC_TIME)


def test_the_front_and_the_two_ways_to_pick_from_it():
    #          acc   seconds/step
    points = [
        (0.90, 1.0),  # 0: front
        (0.80, 2.0),  # 1: dominated by 0
        (0.95, 1.5),  # 2: front (most accurate)
        (0.70, 0.4),  # 3: front (fastest)
        (0.94, 1.2),  # 4: front
        (math.nan, 0.1),  # 5: never on the front
    ]
    assert non_dominated(points, ACC_TIME) == [0, 2, 3, 4]
    # Scaled over the front, acc 0.70..0.95 and time 0.4..1.5: point 4 has regrets (0.04, 0.73), point 0 (0.2, 0.55).
    assert closest_to_ideal(points, ACC_TIME) == 0
    # The fastest within 0.01 of the best accuracy (0.95): 0.94 at 1.2 s beats 0.95 at 1.5 s.
    assert best_within(points, ACC_TIME, primary=0, secondary=1, tolerance=0.01) == 4
    assert best_within(points, ACC_TIME, primary=0, secondary=1, tolerance=0.0) == 2
    assert best_within(points, ACC_TIME, primary=0, secondary=1, tolerance=1.0) == 3
    # The most accurate within 0.5 s of the fastest step.
    assert best_within(points, ACC_TIME, primary=1, secondary=0, tolerance=0.7) == 0


@pytest.fixture
def journal(tmp_path: Path) -> JournalStorage:
    return JournalStorage(JournalFileBackend(str(tmp_path / "optuna.journal")))


def _study(storage, pruner: ParetoPruner, directions=ACC_TIME, name: str = "pareto") -> optuna.Study:
    return optuna.create_study(study_name=name, storage=storage, directions=directions, pruner=pruner)


def _completed(study: optuna.Study, curve: dict[int, list[float]]) -> None:
    """A finished trial with the given vectors at each step (its final values: the last step's)."""
    attrs = {f"{INTERMEDIATE}:{step}": list(v) for step, v in curve.items()}
    study.add_trial(create_trial(state=TrialState.COMPLETE, values=curve[max(curve)], user_attrs=attrs))


# Three completed trials (accuracy, seconds per step) at steps 10, 20, 30.
A = {10: [0.5, 1.0], 20: [0.7, 1.0], 30: [0.8, 1.0]}
B = {10: [0.6, 1.2], 20: [0.75, 1.2], 30: [0.85, 1.2]}
C = {10: [0.4, 0.5], 20: [0.6, 0.5], 30: [0.7, 0.5]}


def _running(study: optuna.Study, curve: dict[int, list[float]]) -> optuna.Trial:
    trial = study.ask()
    for step, values in curve.items():
        report_vector(trial, step, values)
    return trial


def test_a_trial_dominated_by_k_completed_trials_is_pruned_and_one_on_the_front_is_kept(journal: JournalStorage):
    study = _study(journal, ParetoPruner(n_startup_trials=3, min_dominators=2))
    for curve in (A, B, C):
        _completed(study, curve)
    dominated = _running(study, {10: [0.3, 1.5]})  # below A, B and C in accuracy, slower than all
    assert study.pruner.dominators(study, study.trials[dominated.number]) == [0, 1, 2]
    assert should_prune(dominated)
    cheap = _running(study, {10: [0.35, 0.2]})  # least accurate, but no trial is as fast: on the front
    assert not should_prune(cheap)
    between = _running(study, {10: [0.45, 1.1]})  # dominated by A only (B is slower, C less accurate)
    assert study.pruner.dominators(study, study.trials[between.number]) == [0]
    assert not should_prune(between)  # one dominator < min_dominators=2


def test_min_dominators_startup_and_warm_up_are_respected(journal: JournalStorage):
    study = _study(journal, ParetoPruner(n_startup_trials=4, n_warmup_steps=15, min_dominators=3))
    for curve in (A, B, C):
        _completed(study, curve)
    trial = _running(study, {10: [0.3, 1.5]})
    assert not should_prune(trial)  # 3 completed < n_startup_trials=4
    study.pruner = ParetoPruner(n_startup_trials=3, n_warmup_steps=15, min_dominators=3)
    assert not should_prune(trial)  # step 10 < n_warmup_steps=15
    report_vector(trial, 20, [0.5, 1.5])
    assert should_prune(trial)  # step 20: A, B and C dominate it
    study.pruner = ParetoPruner(n_startup_trials=3, n_warmup_steps=15, min_dominators=4)
    assert not should_prune(trial)  # only 3 can


def test_a_step_no_completed_trial_reported_compares_with_their_latest_earlier_step(journal: JournalStorage):
    study = _study(journal, ParetoPruner(n_startup_trials=1, min_dominators=1))
    _completed(study, {20: [0.7, 1.0], 40: [0.8, 1.0]})
    _completed(study, {30: [0.99, 0.1]})  # reports from step 30 on: nothing to compare with before it
    trial = _running(study, {25: [0.75, 0.9]})  # vs the first at step 20 (0.7, 1.0): not dominated
    assert study.pruner.dominators(study, study.trials[trial.number]) == []
    report_vector(trial, 35, [0.72, 1.1])  # the second (at 30) dominates; the first (at 20: 0.7) is less accurate
    assert study.pruner.dominators(study, study.trials[trial.number]) == [1]
    report_vector(trial, 36, [0.69, 1.1])  # now the first (0.7, 1.0) dominates too
    assert study.pruner.dominators(study, study.trials[trial.number]) == [0, 1]
    assert vector_at({20: (1.0,), 40: (2.0,)}, 39) == (1.0,) and vector_at({20: (1.0,)}, 19) is None


def test_nan_is_pruned_and_a_repeated_step_keeps_the_later_vector(journal: JournalStorage):
    study = _study(journal, ParetoPruner(n_startup_trials=1, min_dominators=5))
    _completed(study, A)
    trial = _running(study, {10: [0.9, 0.1]})
    assert not should_prune(trial)
    report_vector(trial, 10, [math.nan, 0.1])  # the same step again (a requeued trial): the later vector counts
    assert math.isnan(intermediate_vectors(study.trials[trial.number])[10][0])
    assert should_prune(trial)
    with pytest.raises(ValueError, match="2 objectives"):
        report_vector(trial, 20, [0.5])


def test_with_one_objective_it_reads_optunas_own_reports(journal: JournalStorage):
    """A single-objective study reports with ``trial.report``: pruned when k completed trials were better."""
    study = optuna.create_study(storage=journal, direction="maximize", pruner=ParetoPruner(1, 0, min_dominators=2))
    for value in (0.5, 0.6, 0.7):
        study.add_trial(create_trial(state=TrialState.COMPLETE, value=value, intermediate_values={10: value}))
    trial = study.ask()
    trial.report(0.55, 10)
    assert trial.should_prune()  # 0.6 and 0.7 beat it
    trial.report(0.65, 11)
    assert not trial.should_prune()  # only 0.7 does


def test_the_pruner_checks_its_settings():
    for kwargs in ({"n_startup_trials": -1}, {"n_warmup_steps": -1}, {"min_dominators": 0}):
        with pytest.raises(ValueError):
            ParetoPruner(**kwargs)


@pytest.fixture(params=["journal", "sqlite", "postgresql"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[optuna.storages.BaseStorage]:
    if request.param == "journal":
        yield JournalStorage(JournalFileBackend(str(tmp_path / "optuna.journal")))
    elif request.param == "sqlite":
        yield RDBStorage(f"sqlite:///{tmp_path / 'optuna.db'}")
    else:
        try:
            storage = RDBStorage(POSTGRES)
        except Exception as err:  # noqa: BLE001  (whatever SQLAlchemy raises when no server answers)
            pytest.skip(f"no PostgreSQL server at {POSTGRES.split('@')[1]} (scripts/postgres.sh start): {err}")
        yield storage


def test_a_small_study_prunes_its_dominated_trial_in_a_real_storage(storage):
    """Five trials of made-up training curves run through ask/tell, one after the other as a sweep worker runs
    them: each reports (accuracy, seconds per step) every 10 steps and stops when the pruner says so. The one slow
    and inaccurate trial is pruned at its first step past the warm-up; the study read back from the storage has
    every reported vector, and its front is the non-dominated set of the completed trials' values."""
    name = f"pareto_{uuid.uuid4().hex[:8]}"
    study = _study(storage, ParetoPruner(n_startup_trials=3, n_warmup_steps=20, min_dominators=2), name=name)
    try:
        _run_and_check(study, storage, name)
    finally:
        optuna.delete_study(study_name=name, storage=storage)  # the PostgreSQL database is shared


def _run_and_check(study: optuna.Study, storage, name: str) -> None:
    quality_cost = [(0.9, 1.0), (0.8, 2.0), (0.95, 1.5), (0.5, 3.0), (0.7, 0.4)]
    pruned_at = {}
    for quality, seconds in quality_cost:
        trial = study.ask()
        for step in range(10, 101, 10):
            values = [quality * (1 - math.exp(-step / 30)), seconds]
            report_vector(trial, step, values)
            if should_prune(trial):
                pruned_at[trial.number] = step
                study.tell(trial, state=TrialState.PRUNED)
                break
        else:
            study.tell(trial, values)
    assert pruned_at == {3: 20}  # dominated by trials 0, 1 and 2 from its first report; judged once warmed up

    again = optuna.load_study(study_name=name, storage=storage)  # as another process reads it
    trials = again.get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3 + [TrialState.PRUNED, TrialState.COMPLETE]
    assert list(intermediate_vectors(trials[3])) == [10, 20] and trials[3].values is None
    assert intermediate_vectors(trials[4])[100] == pytest.approx((0.7 * (1 - math.exp(-100 / 30)), 0.4))
    completed = [t for t in trials if t.state == TrialState.COMPLETE]
    front = [completed[i].number for i in non_dominated([t.values for t in completed], ACC_TIME)]
    assert sorted(t.number for t in again.best_trials) == front == [0, 2, 4]
