"""The asynchronous sweeper through the real CLI: 2 workers on one study, pruning, a resumed sweep that draws no
parameter set twice, and a worker killed mid-trial that is replaced at once while its trial continues."""

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
from faults import install_slow
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


@pytest.mark.slow
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
    assert "2 worker(s) for 5 waiting trial(s)" in proc.stdout + proc.stderr
    sweep = workdir / "runs" / "sweeps" / "digits_fixmatch"
    trials = load(sweep).get_trials()
    states = [t.state for t in trials]
    assert len(trials) == 5 and all(s.is_finished() for s in states), states
    assert TrialState.PRUNED in states and TrialState.COMPLETE in states, states
    for t in trials:
        status = read_json(sweep / f"trial_{t.number:04d}" / "status.json")
        if t.state == TrialState.PRUNED:
            # stopped like a run that reached its end: no traceback, and its metrics record
            assert status["state"] == "pruned" and not status.get("traceback") and not status.get("error")
            assert max(t.intermediate_values) < 9 and "pruned at step" in t.user_attrs["pruned"]
            metrics = read_json(sweep / f"trial_{t.number:04d}" / "metrics.json")
            assert metrics["objective"]["value"] == max(t.intermediate_values.values())
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

    report = render(build(str(sweep)))  # what `python -m sesemi.sweep_report` prints
    assert re.search(r"^\d+\s+PRUNED\s.*pruned at step [36]$", report, re.MULTILINE), report
    # The plots show pruned trials (their best reported value, marked), with readable axis labels and a legend.
    history = (sweep / "report" / "optimization_history.html").read_text()
    assert "pruned (its best reported value)" in history
    coordinates = (sweep / "report" / "parallel_coordinate.html").read_text()
    assert '"threshold"' in coordinates and '"width"' in coordinates and "method.loss_heads..." not in coordinates
    assert '"showlegend":true' in (sweep / "report" / "intermediate_values.html").read_text().replace(" ", "")

    # TensorBoard's HParams status: success for a complete trial, failure for a pruned one.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import api_pb2, plugin_data_pb2

    for t in trials:
        events = EventAccumulator(str(sweep / f"trial_{t.number:04d}"))
        events.Reload()
        content = events.PluginTagToContent("hparams")["_hparams_/session_end_info"]
        status = plugin_data_pb2.HParamsPluginData.FromString(content).session_end_info.status
        assert status == (api_pb2.STATUS_SUCCESS if t.state == TrialState.COMPLETE else api_pb2.STATUS_FAILURE)


@pytest.mark.slow
def test_resumed_async_sweep_draws_no_parameter_set_twice(workdir: Path):
    """The same command three times with a growing budget (the built-in search's seed: 0 each time)."""
    for budget in (2, 4, 6):
        proc = run_cli([*ASYNC, f"hydra.sweeper.n_trials={budget}", "hydra/sweeper/pruner=none"], workdir)
        assert f"{budget - 2} of n_trials={budget} trials exist" in proc.stdout + proc.stderr
    trials = load(workdir / "runs" / "sweeps" / "digits_fixmatch").get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 6
    drawn = [tuple(sorted(t.params.items())) for t in trials]
    assert len(set(drawn)) == 6, drawn


def _log_time(line: str) -> float:
    """The time of a Hydra log line ``[2026-12-01 14:57:19,123][...]``."""
    from datetime import datetime

    return datetime.strptime(line[1:24], "%Y-%m-%d %H:%M:%S,%f").timestamp()


@pytest.mark.slow
def test_killed_worker_is_replaced_at_once_and_its_trial_continued(workdir: Path):
    """A worker killed with ``kill -9`` mid-trial, after its trial's first checkpoint: the worker is replaced at
    once, and once the trial's heartbeat is older than ``grace_period`` a worker claims it and continues it as
    itself (same number, same run dir) from its ``last.ckpt``; no trial is retried as a new one."""
    heartbeat, grace = 3, 12
    args = [
        *ASYNC,  # loader workers on (the default data settings): a fault test
        "hydra.sweeper.n_trials=5",
        "trainer.max_steps=12",
        "trainer.val_check_interval=6",
        "hydra/sweeper/pruner=none",
        f"hydra.sweeper.heartbeat_interval={heartbeat}",
        f"hydra.sweeper.grace_period={grace}",
        *install_slow(workdir),  # 0.3 s per step: the kill lands between the checkpoint at step 6 and the end
    ]
    log = open(workdir / "sweep.log", "w")  # noqa: SIM115 - the sweep's output while it runs
    proc = subprocess.Popen(
        [sys.executable, "-m", "sesemi.train", *FAST, "data.num_workers=2", *args],
        cwd=workdir,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    sweep = workdir / "runs" / "sweeps" / "digits_fixmatch"
    victim = None
    deadline = time.time() + 300
    try:
        while victim is None and time.time() < deadline and proc.poll() is None:
            time.sleep(0.2)
            if not (sweep / "sweep.json").is_file():
                continue
            for t in load(sweep).get_trials(states=(TrialState.RUNNING,)):
                if "pid" in t.user_attrs and (Path(t.user_attrs["run_dir"]) / "checkpoints" / "last.ckpt").is_file():
                    victim = t
                    break
        assert victim is not None, (workdir / "sweep.log").read_text()[-3000:]
        os.kill(victim.user_attrs["pid"], signal.SIGKILL)  # the worker process, mid-trial
        killed_at = time.time()
        rc = proc.wait(timeout=400)
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    text = (workdir / "sweep.log").read_text()
    assert rc == 0, text[-4000:]

    # The dead worker was noticed and a replacement launched within a heartbeat interval (trials were waiting).
    dead = victim.user_attrs["worker"].split("@")[0]
    (ended,) = [line for line in text.splitlines() if f"worker {dead} ended after 1 trial(s): lost" in line]
    (replacement,) = [line for line in text.splitlines() if "] local job 2 (" in line]  # worker w2's job
    assert _log_time(replacement) - killed_at < heartbeat, (ended, replacement)

    # The budget of 5, exactly: the killed trial continued as itself, nothing was retried as a new trial.
    trials = load(sweep).get_trials()
    assert [t.number for t in trials] == [0, 1, 2, 3, 4] and all(t.state == TrialState.COMPLETE for t in trials)
    continued = trials[victim.number]
    assert continued.params == victim.params and "retry_history" not in continued.user_attrs
    status = read_json(sweep / f"trial_{victim.number:04d}" / "status.json")
    first, second = status["attempts"]  # one more attempt in the same run dir
    assert status["state"] == "completed" and first["pid"] == victim.user_attrs["pid"]
    assert second["previous_state"] == "running"  # killed without a word
    assert second["resumed_from"] == str(sweep / f"trial_{victim.number:04d}" / "checkpoints" / "last.ckpt")
    attempts = continued.user_attrs["sesemi:attempts"]
    assert len(attempts) == 2 and attempts[1]["step"] >= 6 and attempts[1]["worker"].split("@")[0] != dead
    assert attempts[1]["at"] - killed_at >= grace - heartbeat  # lost: no heartbeat for grace_period
    assert read_json(sweep / f"trial_{victim.number:04d}" / "metrics.json")["global_step"] == 12
    assert sorted(continued.intermediate_values) == [6, 12]  # the study kept the first attempt's report
    # Whether the replacement also takes trials is a race with the survivor, which may drain these short trials
    # while the replacement is still starting (seen in CI on 2 cores): asserted is that it was launched at once
    # (above) and ended completed (below), and that every trial after the kill ran on a live worker.
    after = [t for t in trials if t.datetime_start.timestamp() > killed_at]
    workers_after = [t.user_attrs["worker"].split("@")[0] for t in after]
    assert workers_after and dead not in workers_after, workers_after
    worker_dirs = {d.name: read_json(d / "status.json")["state"] for d in (sweep / "workers").glob("*/w*")}
    # A worker that found no waiting trial (the lost one is claimable only after the grace period) ends, and a
    # later replacement continues it: more than w2 may appear, but only the killed one failed.
    assert worker_dirs[dead] == "failed" and "w2" in worker_dirs, worker_dirs
    assert all(state == "completed" for name, state in worker_dirs.items() if name != dead), worker_dirs
    # Every trial has a dir of its own, holding its own parameters: nothing was overwritten.
    dirs = sorted(sweep.glob("trial_*"))
    assert [d.name for d in dirs] == [f"trial_{t.number:04d}" for t in trials]
    for t in trials:
        overrides = yaml.safe_load((sweep / f"trial_{t.number:04d}" / ".hydra" / "overrides.yaml").read_text())
        assert f"optimizer.lr={t.params['optimizer.lr']}" in overrides
        status = read_json(sweep / f"trial_{t.number:04d}" / "status.json")
        assert len(status["attempts"]) == (2 if t.number == victim.number else 1) and status["state"] == "completed"
