"""A sweep on PostgreSQL storage (the local server of scripts/postgres.sh), the password from the environment."""

from __future__ import annotations

import contextlib
import uuid
from pathlib import Path

import optuna
import pytest
from conftest import read_json, run_cli
from optuna.trial import TrialState

from sesemi.sweep.storage import make_storage

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

URL = "postgresql://sesemi@127.0.0.1:5432/sesemi_optuna"  # no password: it comes from $SESEMI_STORAGE_PASSWORD
PASSWORD = "sesemi"


@pytest.fixture
def storage(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("PGPASSWORD", raising=False)
    try:
        monkeypatch.setenv("SESEMI_STORAGE_PASSWORD", PASSWORD)
        storage = make_storage(URL)
        monkeypatch.delenv("SESEMI_STORAGE_PASSWORD")
    except Exception as err:  # noqa: BLE001
        pytest.skip(f"no PostgreSQL server at {URL} (scripts/postgres.sh start): {err}")
    return storage


def test_sweep_on_postgresql(workdir: Path, storage: optuna.storages.RDBStorage):
    name = f"test_{uuid.uuid4().hex[:8]}"
    env = {"SESEMI_STORAGE_PASSWORD": PASSWORD}
    try:
        run_cli(
            [
                "-m",
                "hparams_search=digits_fixmatch",
                "hydra.sweeper.n_jobs=1",
                "hydra.sweeper.n_trials=2",
                f"hydra.sweeper.storage='{URL}'",
                f"hydra.sweeper.study_name={name}",
            ],
            workdir,
            env=env,
        )
        study = optuna.load_study(study_name=name, storage=storage)
        trials = study.get_trials()
        assert [t.state for t in trials] == [TrialState.COMPLETE] * 2
        sweep = workdir / "runs" / "sweeps" / name
        for t in trials:
            assert t.user_attrs["run_dir"] == str(sweep / f"trial_{t.number:04d}")
            assert read_json(sweep / f"trial_{t.number:04d}" / "metrics.json")["objective"]["value"] == t.value
        assert not (sweep / "optuna.journal").exists()
        assert read_json(sweep / "sweep.json")["storage"] == URL
        # The password is in no file of the sweep (configs, logs, status, metrics).
        leaks = [p for p in workdir.rglob("*") if p.is_file() and f":{PASSWORD}@".encode() in p.read_bytes()]
        assert not leaks, leaks

        report = run_cli([str(sweep), "--no-plots"], workdir, fast=False, module="sesemi.sweep_report", env=env).stdout
        assert f"study {name} (val/acc, maximize): 2 trials, 2 complete" in report
        report = run_cli(
            [URL, "--study", name, "--out", str(workdir / "r")],
            workdir,
            fast=False,
            module="sesemi.sweep_report",
            env=env,
        ).stdout
        assert "best: trial" in report and (workdir / "r" / "trials.csv").is_file()
    finally:
        with contextlib.suppress(KeyError):
            optuna.delete_study(study_name=name, storage=storage)


def test_password_in_the_url_is_refused_and_a_missing_one_is_named(workdir: Path, storage, monkeypatch):
    monkeypatch.delenv("SESEMI_STORAGE_PASSWORD", raising=False)
    sweep = ["-m", "hparams_search=digits_fixmatch", "hydra.sweeper.n_jobs=1", "hydra.sweeper.n_trials=1"]
    with_password = URL.replace("sesemi@", f"sesemi:{PASSWORD}@")
    proc = run_cli([*sweep, f"hydra.sweeper.storage='{with_password}'"], workdir, check=False)
    assert proc.returncode == 2 and not (workdir / "runs").exists()
    (line,) = [x for x in proc.stderr.splitlines() if x.startswith("sesemi: error:")]
    assert "hydra.sweeper.storage: postgresql://sesemi:***@" in line and "export SESEMI_STORAGE_PASSWORD" in line
    assert f":{PASSWORD}@" not in proc.stdout + proc.stderr

    proc = run_cli([*sweep, f"hydra.sweeper.storage='{URL}'"], workdir, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    (line,) = [x for x in proc.stderr.splitlines() if x.startswith("sesemi: error:")]
    assert "the database refused the connection" in line and "export SESEMI_STORAGE_PASSWORD=" in line
    report = run_cli([URL, "--no-plots"], workdir, fast=False, module="sesemi.sweep_report", check=False)
    assert report.returncode == 2 and "export SESEMI_STORAGE_PASSWORD=" in report.stderr
