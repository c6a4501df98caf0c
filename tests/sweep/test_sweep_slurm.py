"""Sweeps on the real SLURM cluster (scripts/slurm_cluster.sh start) through ``hydra/launcher=slurm_cpu``:
synchronous, 2 trials at a time as SLURM jobs, and asynchronous, 2 workers as SLURM jobs; run side by side."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from conftest import FAST, read_json
from optuna.trial import TrialState

from sesemi.sweep.storage import make_storage

pytestmark = [
    pytest.mark.slurm,
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("sinfo") is None, reason="no SLURM client (scripts/slurm_cluster.sh start)"),
]

SLURM = [
    "-m",
    "hparams_search=digits_fixmatch",
    "hydra/launcher=slurm_cpu",
    "hydra.launcher.partition=debug",
    "hydra.launcher.cpus_per_task=1",
]


def load(sweep_dir: Path) -> optuna.Study:
    info = json.loads((sweep_dir / "sweep.json").read_text())
    return optuna.load_study(study_name=info["study_name"], storage=make_storage(None, sweep_dir))


def test_sweeps_on_slurm(tmp_path: Path):
    launches = {
        "sync": [*SLURM, "hydra.sweeper.n_jobs=2", "hydra.sweeper.n_trials=2"],
        "async": [*SLURM, "hydra/sweeper=optuna_async", "hydra.sweeper.workers=2", "hydra.sweeper.n_trials=4"],
    }
    procs = {}
    for name, args in launches.items():
        (tmp_path / name).mkdir()
        procs[name] = subprocess.Popen(
            [sys.executable, "-m", "sesemi.train", *FAST, *args],
            cwd=tmp_path / name,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
    outputs = {name: proc.communicate(timeout=540)[0] for name, proc in procs.items()}
    for name, proc in procs.items():
        assert proc.returncode == 0, outputs[name][-5000:]

    # Synchronous: one SLURM job per trial, both trials of the batch at once.
    sweep = tmp_path / "sync" / "runs" / "sweeps" / "digits_fixmatch"
    trials = load(sweep).get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2
    job_ids = {t.user_attrs["slurm_job_id"] for t in trials}
    assert len(job_ids) == 2 and None not in job_ids
    for t in trials:
        metrics = read_json(sweep / f"trial_{t.number:04d}" / "metrics.json")
        assert metrics["objective"]["value"] == t.value
    starts = sorted(t.datetime_start for t in trials)
    assert (starts[1] - starts[0]).total_seconds() < 5  # taken together as one batch

    # Asynchronous: 2 worker jobs on the cluster ran the 4 trials of one study.
    sweep = tmp_path / "async" / "runs" / "sweeps" / "digits_fixmatch"
    trials = load(sweep).get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 4
    assert len({t.user_attrs["slurm_job_id"] for t in trials}) == 2
    assert len({t.user_attrs["worker"] for t in trials}) == 2
    workers = sorted((sweep / "workers").glob("*/r0_w*"))
    assert len(workers) == 2 and all(read_json(w / "status.json")["state"] == "completed" for w in workers)
    assert sum(read_json(w / "metrics.json")["trials"] for w in workers) == 4
