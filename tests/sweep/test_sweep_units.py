"""Sweep bookkeeping without training: storage specs, budget tickets, heartbeats, retries, failure rate, pruners."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
from hydra.utils import UNSAFE_DISABLE_EXECUTION_CHECKS, instantiate
from omegaconf import OmegaConf
from optuna.trial import TrialState

from sesemi.compat import optuna as compat
from sesemi.errors import ConfigError
from sesemi.sweep import storage as storage_lib
from sesemi.sweep import study as study_lib
from sesemi.sweep.callback import OptunaTrialCallback, TrialContext
from sesemi.sweep.heartbeat import Heartbeat

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def journal_study(tmp_path: Path, direction: str = "maximize") -> optuna.Study:
    return optuna.create_study(
        study_name="s",
        storage=storage_lib.make_storage(None, tmp_path),
        direction=direction,
        sampler=optuna.samplers.RandomSampler(seed=0),
    )


def test_storage_specs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    assert storage_lib.journal_path(None, tmp_path) == tmp_path / "optuna.journal"
    assert storage_lib.journal_path("journal:/x/s.journal", None) == Path("/x/s.journal")
    assert storage_lib.journal_path("shared/s.journal", None) == Path("shared/s.journal").absolute()
    url = "postgresql://sesemi@db:5432/optuna"
    assert storage_lib.is_rdb(url) and storage_lib.journal_path(url, tmp_path) is None
    assert not storage_lib.has_password(url)
    assert "secret" not in storage_lib.mask("postgresql://u:secret@db/o")
    monkeypatch.setenv(storage_lib.PASSWORD_ENV, "pw")
    assert storage_lib._url_with_password(url).split("://")[1] == "sesemi:pw@db:5432/optuna"
    with pytest.raises(ValueError, match="unsupported storage"):
        storage_lib.journal_path("redis://host", None)


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


@pytest.mark.parametrize("name", ["none", "median", "successive_halving", "hyperband"])
def test_pruner_configs_prune_a_bad_trial(tmp_path: Path, name: str):
    node = OmegaConf.load(CONFIGS / "hydra" / "sweeper" / "pruner" / f"{name}.yaml")
    if name == "median":
        node.n_startup_trials = 2
    if name in ("successive_halving", "hyperband"):
        node.min_resource = 100  # ${trainer.val_check_interval} in a sweep
    if name == "hyperband":
        node.max_resource = 1000  # ${trainer.max_steps}
    pruner = instantiate(node, _execution_whitelist_=UNSAFE_DISABLE_EXECUTION_CHECKS)
    study = optuna.create_study(  # a fixed name: hyperband assigns brackets by a hash of it
        study_name="pruners", direction="maximize", pruner=pruner, sampler=optuna.samplers.RandomSampler(seed=0)
    )
    for _ in range(9):  # good trials, reporting at steps 100..1000
        trial = study.ask()
        for step in range(100, 1001, 100):
            trial.report(0.5 + step / 2000, step)
            assert not trial.should_prune() or name != "none"
        study.tell(trial, 1.0)
    bad = study.ask()
    pruned_at = None
    for step in range(100, 1001, 100):
        bad.report(0.1, step)
        if bad.should_prune():
            pruned_at = step
            break
    assert (pruned_at is None) == (name == "none")


def test_callback_reports_and_rejects_an_unlogged_objective(tmp_path: Path):
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


def test_report_of_a_moved_sweep_dir_without_run_dirs(tmp_path: Path):
    from sesemi.sweep.report import build, render

    sweep = tmp_path / "copied_sweep"
    sweep.mkdir()
    study = optuna.create_study(study_name="s", storage=storage_lib.make_storage(None, sweep), direction="maximize")
    study.optimize(lambda t: t.suggest_float("optimizer.lr", 0.01, 0.1), n_trials=3)
    # sweep.json still names the journal where the sweep ran
    (sweep / "sweep.json").write_text('{"study_name": "s", "storage": "/gone/optuna.journal", "journal": true}')
    report = build(str(sweep), plots=False)
    text = render(report)
    assert "study s (value, maximize): 3 trials, 3 complete" in text
    assert "checkpoint: -" in text and (sweep / "report" / "trials.csv").is_file()


def _settings(seed: int | None = 0, target: str = "optuna.samplers.TPESampler"):
    from sesemi.sweep.settings import SweepSettings

    return SweepSettings(
        study_name="s",
        storage=None,
        sweep_dir="",
        session="x",
        n_trials=4,
        sampler={"_target_": target, "seed": seed},
        distributions={"x": optuna.distributions.FloatDistribution(0, 1)},
    )


def _draw(study: optuna.Study, settings) -> list[float]:
    from sesemi.sweep.settings import take_trial

    drawn = []
    while (trial := take_trial(study, settings)) is not None:
        drawn.append(study_lib.suggest(trial, settings.distributions)["x"])
        study.tell(trial, drawn[-1])
    return drawn


@pytest.mark.parametrize("target", ["optuna.samplers.TPESampler", "optuna.samplers.RandomSampler"])
def test_resumed_sweeps_never_redraw_and_a_seed_reproduces(tmp_path: Path, target: str):
    """Each sweep command (and each worker) loads a fresh sampler with the same seed: seeding it from the trial
    number, not from the command, is what keeps a resumed sweep from drawing its first parameters again."""
    settings = _settings(target=target)
    runs = []
    for name in ("a", "b"):  # two studies, the same seed and history: the same draws
        study = journal_study(tmp_path / name)
        drawn = []
        for budget in (2, 4, 6):  # three commands on one study, each with a new sampler object
            study_lib.top_up(study, budget)
            drawn += _draw(study, settings)
        runs.append(drawn)
    assert len(runs[0]) == 6 and len(set(runs[0])) == 6, runs[0]
    assert runs[0] == runs[1]


def test_waiting_trials_of_an_old_search_space_are_dropped_not_counted(tmp_path: Path):
    study = journal_study(tmp_path)
    study.enqueue_trial({"optimizer.lrr": 0.1}, user_attrs={"retry_history": [0]})  # a retry with a misspelt key
    study.enqueue_trial({"optimizer.lr": 0.1})
    assert study_lib.drop_stale_waiting(study, {"optimizer.lr"}) == [0]
    trials = study.get_trials()
    assert trials[0].state == TrialState.FAIL and "optimizer.lrr" in trials[0].user_attrs["error"]
    assert study_lib.top_up(study, 2) == 1  # the dropped one gives its place back


def test_short_axis_names():
    from sesemi.sweep.plots import short_names

    keys = ["method.loss_heads.fixmatch.threshold", "method.loss_heads.fixmatch.weight", "optimizer.weight_decay"]
    assert short_names([*keys, "model.backbone.weight"]) == {
        keys[0]: "threshold",
        keys[1]: "fixmatch.weight",
        keys[2]: "weight_decay",
        "model.backbone.weight": "backbone.weight",
    }
