"""The asynchronous sweeper through the real CLI: 2 workers on one study, pruning, and a worker killed mid-trial."""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from conftest import FAST, read_json, run_cli
from optuna.trial import TrialState

from sesemi.sweep.report import build, render
from sesemi.sweep.storage import make_storage

pytestmark = pytest.mark.slow  # real training runs through the CLI (the fast tier is -m "not slow")

ASYNC = [
    "-m",
    "hparams_search=digits_fixmatch",
    "hydra/sweeper=optuna_async",
    "hydra.sweeper.workers=2",
    "method.ema.evaluate=false",
]


def load(sweep_dir: Path) -> optuna.Study:
    info = json.loads((sweep_dir / "sweep.json").read_text())
    return optuna.load_study(study_name=info["study_name"], storage=make_storage(None, sweep_dir))


def by_worker(trials: list[optuna.trial.FrozenTrial]) -> dict[str, list[optuna.trial.FrozenTrial]]:
    workers: dict[str, list] = {}
    for t in sorted(trials, key=lambda t: t.datetime_start):
        workers.setdefault(t.user_attrs["worker"], []).append(t)
    return workers


def test_two_async_workers_prune_trials_and_never_wait(workdir: Path):
    proc = run_cli(
        [
            *ASYNC,
            "hydra.sweeper.n_trials=5",
            "trainer.max_steps=9",
            # successive halving at steps 3 and 6 (validations every 3 steps), keeping the better half; 9 is the end
            "hydra/sweeper/pruner=successive_halving",
            "hydra.sweeper.pruner.reduction_factor=2",
        ],
        workdir,
    )
    assert "round 0: 2 worker(s) for 5 waiting trial(s)" in proc.stdout + proc.stderr
    sweep = workdir / "runs" / "sweeps" / "digits_fixmatch"
    trials = load(sweep).get_trials()
    states = [t.state for t in trials]
    assert len(trials) == 5 and all(s.is_finished() for s in states), states
    assert TrialState.PRUNED in states and TrialState.COMPLETE in states, states
    for t in trials:
        status = read_json(sweep / f"trial_{t.number:04d}" / "status.json")
        if t.state == TrialState.PRUNED:
            assert status["state"] == "pruned"
            assert max(t.intermediate_values) < 9 and "pruned at step" in t.user_attrs["pruned"]
        else:
            assert t.state == TrialState.COMPLETE and status["state"] == "completed"
            assert sorted(t.intermediate_values) == [3, 6, 9]

    # Two workers shared the study; each took its next trial as soon as its last one ended.
    workers = by_worker(trials)
    assert len(workers) == 2, list(workers)
    for name, own in workers.items():
        assert len(own) >= 2, (name, [t.number for t in own])
        for done, nxt in itertools.pairwise(own):
            idle = (nxt.datetime_start - done.datetime_complete).total_seconds()
            assert 0 <= idle < 5, f"{name} idle {idle:.1f}s between trials {done.number} and {nxt.number}"
    (first, *_), (second, *_) = workers.values()
    assert abs((first.datetime_start - second.datetime_start).total_seconds()) < 30  # in flight together

    report = render(build(str(sweep), plots=False))  # what `python -m sesemi.sweep_report` prints
    assert re.search(r"^\d+\s+PRUNED\s.*pruned at step [36]$", report, re.MULTILINE), report


def test_killed_worker_trial_is_retried_and_no_dir_is_reused(workdir: Path):
    args = [
        *FAST,
        *ASYNC,
        "hydra.sweeper.n_trials=3",
        "trainer.max_steps=12",
        "trainer.val_check_interval=6",
        "hydra/sweeper/pruner=none",
        "hydra.sweeper.heartbeat_interval=1",
        "hydra.sweeper.grace_period=4",
    ]
    log = open(workdir / "sweep.log", "w")  # noqa: SIM115 - the sweep's output while it runs
    proc = subprocess.Popen(
        [sys.executable, "-m", "sesemi.train", *args], cwd=workdir, stdout=log, stderr=subprocess.STDOUT
    )
    sweep = workdir / "runs" / "sweeps" / "digits_fixmatch"
    victim = None
    deadline = time.time() + 240
    try:
        while victim is None and time.time() < deadline and proc.poll() is None:
            time.sleep(1)
            if not (sweep / "sweep.json").is_file():
                continue
            for t in load(sweep).get_trials(states=(TrialState.RUNNING,)):
                if "pid" in t.user_attrs and (Path(t.user_attrs["run_dir"]) / "status.json").is_file():
                    victim = t
                    break
        assert victim is not None, (workdir / "sweep.log").read_text()[-3000:]
        os.kill(victim.user_attrs["pid"], signal.SIGKILL)  # the worker process, mid-trial
        rc = proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    text = (workdir / "sweep.log").read_text()
    assert rc == 0, text[-4000:]

    trials = load(sweep).get_trials()
    lost = trials[victim.number]
    assert lost.state == TrialState.FAIL and "no heartbeat" in lost.user_attrs["error"]
    (retry,) = [t for t in trials if t.system_attrs.get("retry_history") == [victim.number]]
    assert retry.state == TrialState.COMPLETE and retry.params == victim.params
    others = [t for t in trials if t.number not in (victim.number, retry.number)]
    assert len(others) == 2 and all(t.state == TrialState.COMPLETE for t in others)  # the budget of 3 was run
    assert read_json(Path(lost.user_attrs["run_dir"]) / "status.json")["state"] == "failed"
    # Every trial has a dir of its own, holding its own parameters: nothing was overwritten.
    dirs = sorted(sweep.glob("trial_*"))
    assert [d.name for d in dirs] == [f"trial_{t.number:04d}" for t in trials]
    for t in trials:
        overrides = yaml.safe_load((sweep / f"trial_{t.number:04d}" / ".hydra" / "overrides.yaml").read_text())
        assert f"optimizer.lr={t.params['optimizer.lr']}" in overrides
        assert len(read_json(sweep / f"trial_{t.number:04d}" / "status.json")["attempts"]) == 1
