"""A sweep of several objectives through the real CLI (``hparams_search=digits_pareto``: validation loss and the
network's size, both minimised, NSGA-II, the Pareto pruner): each trial's values are its run's, the study's front is
the completed trials no other beats in both, a dominated trial is stopped by the pruner, the report shows the front."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import yaml
from conftest import read_json, run_cli
from optuna.trial import TrialState

from sesemi.sweep.pareto import non_dominated
from sesemi.sweep.report import build, render
from sesemi.sweep.storage import make_storage

pytestmark = pytest.mark.slow


def test_a_two_objective_sweep_keeps_its_pareto_front_and_prunes_a_dominated_trial(workdir: Path):
    run_cli(
        [
            "-m",
            "hparams_search=digits_pareto",
            "hydra.sweeper.n_trials=4",
            "trainer.max_steps=9",
            "trainer.val_check_interval=3",
        ],
        workdir,
    )
    sweep = workdir / "runs" / "sweeps" / "digits_pareto"
    study = optuna.load_study(study_name="digits_pareto", storage=make_storage(None, sweep))
    assert study.metric_names == ["val/loss", "cost/params"]
    assert [d.name for d in study.directions] == ["MINIMIZE", "MINIMIZE"]
    trials = study.get_trials()
    # The large, barely learning network, judged after the warm-up against the two small ones: stopped.
    assert trials[2].params["model.backbone.width"] == 64 and trials[2].state == TrialState.PRUNED, trials[2]
    assert "pruned at step 6" in trials[2].user_attrs["pruned"]
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) >= 2  # the two small networks (a sampled fourth may be stopped too)
    for t in complete:  # each value is the run's own, at its end
        final = read_json(Path(t.user_attrs["run_dir"]) / "metrics.json")["final"]
        assert t.values == [pytest.approx(final["val/loss"]), pytest.approx(final["cost/params"])]
    front = sorted(complete[i].number for i in non_dominated([tuple(t.values) for t in complete], study.directions))
    assert sorted(t.number for t in study.best_trials) == front
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert [entry["trial"] for entry in results["pareto_front"]] == front

    text = render(build(str(sweep)))
    assert "Pareto front (val/loss minimize, cost/params minimize)" in text
    assert "closest to the ideal point: trial" in text and "picked: trial" in text
    assert (sweep / "report" / "pareto_front.html").is_file()


def test_a_bad_objectives_list_is_one_error_line(workdir: Path):
    proc = run_cli(["-m", "hparams_search=digits_pareto", "run.objectives=[val/loss:min]"], workdir, check=False)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("sesemi: error:")]
    assert proc.returncode == 2 and len(errors) == 1, proc.stderr[-2000:]
    assert errors[0].startswith("sesemi: error: run.objectives: lists ['val/loss']")
    assert not (workdir / "runs" / "sweeps" / "digits_pareto" / "optuna.journal").exists()  # nothing stored
