"""sesemi.sweep.report (``python -m sesemi.sweep_report``): the best trial's parameters at full precision, and the
command it prints to train them again, pasted into a shell as printed (from the sweep's launch folder, and from
another one); the report of a sweep dir copied away from its run dirs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml
from conftest import run_cli

from sesemi.sweep.report import build, render
from sesemi.sweep.storage import make_storage


def _paste(command: str, cwd: Path) -> subprocess.CompletedProcess:
    """``command`` as a user pastes it into bash, with this environment's python first on PATH."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


@pytest.mark.slow  # a real sweep through the CLI
def test_the_best_trial_at_full_precision_and_the_command_that_trains_it_again(workdir: Path):
    run_cli(["-m", "hparams_search=digits_fixmatch", "hydra.sweeper.n_trials=2", "hydra.sweeper.n_jobs=1"], workdir)
    sweep = workdir / "runs" / "sweeps" / "digits_fixmatch"
    best = optuna.load_study(study_name="digits_fixmatch", storage=make_storage(None, sweep)).best_trial

    text = run_cli([str(sweep), "--no-plots"], workdir, fast=False, module="sesemi.sweep_report").stdout
    (params,) = [line for line in text.splitlines() if line.startswith("  params: ")]
    printed = dict(p.split("=", 1) for p in params.removeprefix("  params: ").split())
    assert {k: type(v)(printed[k]) for k, v in best.params.items()} == best.params  # every digit
    assert any(len(v) > 12 for v in printed.values())  # e.g. optimizer.lr=0.03534434615812953, not 0.03534
    (command,) = [line.split(": ", 1)[1] for line in text.splitlines() if line.startswith("  train it again: ")]
    assert command.startswith("python -m sesemi.train ") and command.endswith(
        f" run.id=digits_fixmatch_trial{best.number}"
    )

    proc = _paste(command, workdir)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    (run_dir,) = (workdir / "runs" / f"digits_fixmatch_trial{best.number}").iterdir()
    config = yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text())
    trial = yaml.safe_load((sweep / f"trial_{best.number:04d}" / ".hydra" / "config.yaml").read_text())
    for key in best.params:
        a, b = config, trial
        for part in key.split("."):
            a, b = a[part], b[part]
        assert a == b == best.params[key], key
    assert config["trainer"] == trial["trainer"] and config["data"] == trial["data"]

    elsewhere = workdir / "elsewhere"
    elsewhere.mkdir()
    text = run_cli([str(sweep), "--no-plots"], elsewhere, fast=False, module="sesemi.sweep_report").stdout
    (command,) = [line.split(": ", 1)[1] for line in text.splitlines() if line.startswith("  train it again: ")]
    assert command.startswith(f"cd {workdir} && python -m sesemi.train ")
    proc = _paste(command, elsewhere)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert len(list((workdir / "runs" / f"digits_fixmatch_trial{best.number}").iterdir())) == 2
    assert not (elsewhere / "runs").exists()


def test_report_of_a_moved_sweep_dir_without_run_dirs(tmp_path: Path):
    sweep = tmp_path / "copied_sweep"
    sweep.mkdir()
    study = optuna.create_study(study_name="s", storage=make_storage(None, sweep), direction="maximize")
    study.optimize(lambda t: t.suggest_float("optimizer.lr", 0.01, 0.1), n_trials=3)
    # sweep.json still names the journal where the sweep ran
    (sweep / "sweep.json").write_text('{"study_name": "s", "storage": "/gone/optuna.journal", "journal": true}')
    report = build(str(sweep), plots=False)
    text = render(report)
    assert "study s (value, maximize): 3 trials, 3 complete" in text
    assert "checkpoint: -" in text and (sweep / "report" / "trials.csv").is_file()
