"""Seed repeats (``hydra.sweeper.repeats``) and grids grouped over the seed (``hydra.sweeper.over``): on real studies
(journal and PostgreSQL) through the real CLI, and sesemi.sweep.repeats's bookkeeping on a real journal."""

from __future__ import annotations

import contextlib
import json
import statistics
import uuid
from pathlib import Path

import optuna
import pytest
from conftest import read_json, run_cli
from optuna.trial import TrialState

from sesemi.cluster.grouping import group_over, run_dirs
from sesemi.compat import optuna as compat
from sesemi.sweep import repeats
from sesemi.sweep.report import build, render
from sesemi.sweep.storage import make_storage

# Two swept parameters: the search's others fixed on the command line (a key given both ways is fixed).
TWO_PARAMS = [
    "-m",
    "hparams_search=digits_fixmatch",
    "optimizer.weight_decay=0.0005",
    "method.loss_heads.fixmatch.threshold=0.9",
    "method.loss_heads.fixmatch.weight=1.0",
    "hydra.sweeper.n_trials=2",
    "hydra.sweeper.repeats=3",
    "trainer.max_steps=6",
]


def test_repeat_overrides_and_what_is_left_to_run(tmp_path: Path):
    study = optuna.create_study(storage=make_storage(None, tmp_path), study_name="s")
    trial = study.ask()
    frozen = compat.frozen(study, compat.trial_id(trial))
    base = ["optimizer.lr=0.1", "run.seed=7", "hydra.sweep.subdir=trial_0000"]
    assert repeats.overrides(base, 0, 9, "run.seed") == [
        "optimizer.lr=0.1",
        "run.seed=9",
        "hydra.sweep.subdir=trial_0000/seed_9",
    ]
    assert [k for k, _ in repeats.jobs(frozen, base, 3, 7, "run.seed", str(tmp_path))] == [0, 1, 2]
    assert repeats.jobs(frozen, base, 1, 7, "run.seed", str(tmp_path)) == [(None, base)]
    # Seed 1 ended; seed 2 stopped after a checkpoint: only seeds 0 and 2 are left, seed 2 continuing.
    (tmp_path / "trial_0000" / "seed_9" / "checkpoints").mkdir(parents=True)
    (tmp_path / "trial_0000" / "seed_9" / "checkpoints" / "last.ckpt").write_bytes(b"ckpt")
    assert repeats.record_end(study, compat.trial_id(trial), 1, 3, [0.5], base_seed=7) is None
    left = repeats.jobs(compat.frozen(study, compat.trial_id(trial)), base, 3, 7, "run.seed", str(tmp_path))
    assert [k for k, _ in left] == [0, 2] and left[1][1][-1] == f"run.resume={tmp_path}/trial_0000/seed_9"


def test_means_at_equal_steps_and_the_trials_statistics(tmp_path: Path):
    study = optuna.create_study(storage=make_storage(None, tmp_path), study_name="s")
    trial_id = compat.trial_id(study.ask())
    assert repeats.report_step(study, trial_id, 0, 2, step=3, values=[0.2]) is None  # seed 1 not there yet
    assert repeats.report_step(study, trial_id, 1, 2, step=3, values=[0.4]) == [pytest.approx(0.3)]
    assert repeats.record_end(study, trial_id, 0, 2, [0.5], base_seed=0) is None
    stats = repeats.record_end(study, trial_id, 1, 2, [0.7], base_seed=0)
    assert stats == {
        "seeds": [0, 1],
        "values": [[0.5], [0.7]],
        "mean": [pytest.approx(0.6)],
        "std": [pytest.approx(statistics.stdev([0.5, 0.7]))],
    }


def _check_means(sweep: Path, study: optuna.Study, n_trials: int, n_repeats: int) -> None:
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * n_trials
    for t in trials:
        seed_dirs = sorted((sweep / f"trial_{t.number:04d}").glob("seed_*"))
        assert [d.name for d in seed_dirs] == [f"seed_{s}" for s in range(n_repeats)]
        values = [read_json(d / "metrics.json")["objective"]["value"] for d in seed_dirs]
        assert t.value == pytest.approx(statistics.fmean(values))  # the trial is the mean of its runs
        stats = t.user_attrs["sesemi:seeds"]
        assert stats["seeds"] == list(range(n_repeats)) and stats["std"][0] == pytest.approx(statistics.stdev(values))
        # Pruning compares means at equal steps: each intermediate value is the seeds' mean at that step.
        for step, value in t.intermediate_values.items():
            at_step = [t.user_attrs[f"sesemi:repeat:{k}:{step}"][0] for k in range(n_repeats)]
            assert value == pytest.approx(statistics.fmean(at_step))
    text = render(build(str(sweep), plots=False))
    assert " ± " in text


@pytest.mark.slow
def test_a_two_parameter_sweep_with_three_seeds_on_a_journal(workdir: Path):
    run_cli(TWO_PARAMS, workdir)
    sweep = workdir / "runs" / "sweeps" / "digits_fixmatch"
    info = json.loads((sweep / "sweep.json").read_text())
    study = optuna.load_study(study_name=info["study_name"], storage=make_storage(None, sweep))
    assert set(study.trials[0].params) == {"optimizer.lr", "model.backbone.width"}
    _check_means(sweep, study, n_trials=2, n_repeats=3)


@pytest.mark.slow
@pytest.mark.postgres
def test_an_asynchronous_sweep_with_seeds_on_postgresql(workdir: Path, monkeypatch: pytest.MonkeyPatch):
    url = "postgresql://sesemi@127.0.0.1:5432/sesemi_optuna"  # scripts/postgres.sh; the password from the environment
    monkeypatch.setenv("SESEMI_STORAGE_PASSWORD", "sesemi")
    try:
        storage = make_storage(url)
    except Exception as err:  # noqa: BLE001
        pytest.skip(f"no PostgreSQL server at {url} (scripts/postgres.sh start): {err}")
    name = f"test_repeats_{uuid.uuid4().hex[:8]}"
    try:
        run_cli(
            [
                *TWO_PARAMS,
                "hydra/sweeper=optuna_async",
                "hydra.sweeper.workers=2",
                f"hydra.sweeper.storage='{url}'",
                f"hydra.sweeper.study_name={name}",
            ],
            workdir,
        )
        sweep = workdir / "runs" / "sweeps" / name
        _check_means(sweep, optuna.load_study(study_name=name, storage=storage), n_trials=2, n_repeats=3)
    finally:
        with contextlib.suppress(KeyError):
            optuna.delete_study(study_name=name, storage=storage)


@pytest.mark.slow
def test_a_grid_grouped_over_its_seeds(workdir: Path):
    proc = run_cli(["-m", "optimizer.lr=0.01,0.1", "run.seed=0,1", "hydra.sweeper.over=run.seed"], workdir)
    (sweep,) = [p.parent for p in (workdir / "runs").rglob("summary_over.md")]
    groups = {
        next(o for o in g.point.split() if o.startswith("optimizer.lr=")): g
        for g in group_over(run_dirs(sweep), "run.seed")
    }
    assert sorted(groups) == ["optimizer.lr=0.01", "optimizer.lr=0.1"] and all(g.runs == 2 for g in groups.values())
    for lr, group in groups.items():
        values = [
            read_json(d / "metrics.json")["objective"]["value"]
            for d in run_dirs(sweep)
            if lr in (d / ".hydra" / "overrides.yaml").read_text()
        ]
        assert group.mean == pytest.approx(statistics.fmean(values))
        assert f"| {lr} | 2/2 | {group.mean:.4f} ± {group.std:.4f} |" in proc.stdout
    again = run_cli([str(sweep), "--over", "run.seed"], workdir, fast=False, module="sesemi.cluster.summary")
    assert again.stdout == (sweep / "summary_over.md").read_text()
