"""Opening a sweep's study (``sesemi.sweep.opening``): a resumed study refuses a command whose trials would train
something else than its trials did (another ``trainer.max_steps``, data, method, model...), before anything is
touched, with fixes that work when pasted; optuna-dashboard's metric name."""

from __future__ import annotations

import json
import re
import shlex
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import optuna
import pytest
from conftest import run_cli

from sesemi.errors import ConfigError
from sesemi.sweep import study as study_lib
from sesemi.sweep.same_settings import TRAINS, check_same_objective, digest
from sesemi.sweep.settings import SweepSettings
from sesemi.sweep.storage import make_storage


def _settings(tmp_path: Path, swept: tuple[str, ...] = ("optimizer.lr",)) -> SweepSettings:
    distributions = {k: optuna.distributions.FloatDistribution(0.001, 0.1) for k in swept}
    return SweepSettings(study_name="s", storage=None, sweep_dir=str(tmp_path / "s"), session="now", n_trials=4,
                         distributions=distributions)  # fmt: skip


STORAGE = optuna.storages.InMemoryStorage()


def _study_of(command_trains: dict[str, str], search_space: tuple[str, ...] = ("optimizer.lr",)) -> optuna.Study:
    """An in-memory study with one complete trial and the record of the command that ran it."""
    study = optuna.create_study(direction="maximize", storage=STORAGE)
    study.add_trial(optuna.trial.create_trial(value=0.5))
    command = {"session": "then", "search_space": dict.fromkeys(search_space, "x"), "fixed": {}}
    study.set_user_attr(study_lib.COMMANDS, [{**command, "trains": digest(command_trains)}])
    study.set_user_attr(TRAINS, command_trains)
    return study


def test_another_fixed_setting_is_refused_with_both_fixes(tmp_path: Path):
    before = {"trainer.max_steps": "40", "data.labels_per_class": "4", "optimizer.momentum": "0.9"}
    study = _study_of(before)
    now = {**before, "trainer.max_steps": "600", "data.labels_per_class": "10"}
    with pytest.raises(ConfigError) as err:
        check_same_objective(study, _settings(tmp_path), now, "val/acc", False, STORAGE)
    assert err.value.key == "data.labels_per_class"
    assert "data.labels_per_class: 4 -> 10; trainer.max_steps: 40 -> 600" in err.value.problem
    assert "study 's' holds 1 trial that trained" in err.value.problem
    assert "hydra.sweeper.study_name=s_2" in err.value.fix
    assert "hydra.sweeper.accept_changed_settings=true" in err.value.fix
    check_same_objective(study, _settings(tmp_path), now, "val/acc", True, STORAGE)  # accepted: a warning


def test_the_search_space_and_where_a_trial_runs_may_change(tmp_path: Path):
    before = {"trainer.max_steps": "40", "model.backbone.width": "32", "data.num_workers": "2"}
    study = _study_of(before, search_space=("optimizer.lr",))
    # model.backbone.width swept now (it was fixed): a search-space change, not another objective
    swept = _settings(tmp_path, ("optimizer.lr", "model.backbone.width"))
    check_same_objective(study, swept, {"trainer.max_steps": "40"}, "val/acc", False, STORAGE)
    # where it runs and what it shows (data loaders, progress bar, loggers...) is no other objective either
    same = {**before, "data.num_workers": "8", "callbacks.progress_bar.refresh_rate": "1", "logger.csv._target_": "x"}
    check_same_objective(study, _settings(tmp_path), same, "val/acc", False, STORAGE)


def test_a_study_of_an_earlier_sesemi_compares_the_fixed_settings(tmp_path: Path):
    study = optuna.create_study(direction="maximize", storage=STORAGE)
    study.add_trial(optuna.trial.create_trial(value=0.5))
    old = {"session": "then", "search_space": {"optimizer.lr": "x"}, "fixed": {"trainer.max_steps": "40"}}
    study.set_user_attr(study_lib.COMMANDS, [old])  # no "trains" digest, no TRAINS attribute
    settings = _settings(tmp_path)
    settings.fixed_overrides = ["trainer.max_steps=600", "hydra.sweep.dir='x'"]
    with pytest.raises(ConfigError, match=r"trainer.max_steps: 40 -> 600"):
        check_same_objective(study, settings, {}, "val/acc", False, STORAGE)
    settings.fixed_overrides = ["trainer.max_steps=40", "hydra.sweep.dir='x'"]
    check_same_objective(study, settings, {}, "val/acc", False, STORAGE)


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _load(sweep: Path, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=make_storage(None, sweep))


DOC = Path(__file__).resolve().parents[2] / "docs" / "sweeps.md"
# What the docs' commands run here, on top of tests/conftest.py FAST (6 steps): fewer and shorter trials.
TINY = {"hydra.sweeper.n_trials=4": "hydra.sweeper.n_trials=1", "trainer.max_steps=40": "trainer.max_steps=3"}


def _doc_block(heading: str, fence: str) -> str:
    """The first fenced block of ``fence``'s language ("" for plain text) after ``heading``."""
    section = DOC.read_text().split(heading, 1)[1]
    return next(body for lang, body in re.findall(r"```(\w*)\n(.*?)```", section, flags=re.S) if lang == fence)


def _shape(text: str) -> str:
    return re.sub(r"N trials?\b", "N trials", re.sub(r"\d+", "N", text))


@pytest.mark.slow
def test_trying_a_sweep_small_first_does_not_ruin_the_real_one(workdir: Path):
    """docs/sweeps.md, "Trying a sweep small first", as written (tiny trials): the small command creates the study,
    the real one is refused before anything is touched with the error the page shows, and each fix works when
    added to the command. Also the page's optuna-dashboard command, on that study."""
    small, real = (shlex.split(c)[3:] for c in _doc_block("### Trying a sweep small first", "bash").splitlines())
    small = [TINY.get(a, a) for a in small]
    real = [*real, "hydra.sweeper.n_trials=2"]  # the search's own 20 trials, cut to 2
    run_cli(small, workdir)
    sweep = workdir / "runs" / "sweeps" / "digits_fixmatch"
    assert _load(sweep, "digits_fixmatch").metric_names == ["val/acc"]  # what optuna-dashboard names the value
    _dashboard_names_the_objective(sweep, workdir)
    before = _files(sweep)

    proc = run_cli(real, workdir, check=False)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    (line,) = [line for line in proc.stderr.splitlines() if line.startswith("sesemi: error:")]
    shown = _doc_block("### Trying a sweep small first", "").strip()
    assert _shape(line) == _shape(shown), line  # the page's error, with this test's numbers
    assert "(trainer.max_steps: 3 -> 6)" in line and "holds 1 trial that" in line
    assert "Traceback" not in proc.stderr
    assert _files(sweep) == before  # nothing touched: no trial, no ticket, no record, no sweep.json change
    assert [p.name for p in (workdir / "runs").iterdir()] == ["sweeps"]
    assert [p.name for p in (workdir / "runs" / "sweeps").iterdir()] == ["digits_fixmatch"]

    # Where a trial runs and what it shows may change: the same study resumes (its budget is spent: nothing runs).
    proc = run_cli([*small, "data.num_workers=1", "callbacks.images=null"], workdir)
    assert "1 of n_trials=1 trials exist (resumed), 0 to run" in proc.stdout + proc.stderr

    fixes = re.findall(r"hydra\.sweeper\.\w+=\S+", line.split(" Fix: ", 1)[1])
    assert fixes == ["hydra.sweeper.study_name=digits_fixmatch_2", "hydra.sweeper.accept_changed_settings=true"]
    run_cli([*real, fixes[0]], workdir)  # a study of its own, in its own sweep dir
    own = _load(workdir / "runs" / "sweeps" / "digits_fixmatch_2", "digits_fixmatch_2")
    assert [t.state.name for t in own.get_trials()] == ["COMPLETE", "COMPLETE"]
    assert len(_load(sweep, "digits_fixmatch").trials) == 1

    proc = run_cli([*real, fixes[1]], workdir)  # or the same study, knowingly
    assert "accept_changed_settings=true: this command's trials train other settings" in proc.stdout + proc.stderr
    study = _load(sweep, "digits_fixmatch")
    assert [t.state.name for t in study.get_trials()] == ["COMPLETE", "COMPLETE"]
    commands = json.loads((sweep / "sweep.json").read_text())["commands"]
    assert [c["fixed"]["trainer.max_steps"] for c in commands] == ["3", "3", "6"]
    # from now on the study's trials are the new command's: it resumes without the key
    proc = run_cli(real, workdir)
    assert "2 of n_trials=2 trials exist (resumed), 0 to run" in proc.stdout + proc.stderr


def _dashboard_names_the_objective(sweep: Path, cwd: Path) -> None:
    """docs/sweeps.md's optuna-dashboard command (on a free port) serves the study, its value named val/acc."""
    (command,) = _doc_block("**optuna-dashboard**", "bash").strip().splitlines()
    assert command == "optuna-dashboard runs/sweeps/digits_fixmatch/optuna.journal"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    executable = str(Path(sys.executable).with_name("optuna-dashboard"))
    server = subprocess.Popen(
        [executable, *shlex.split(command)[1:], "--port", str(port)],
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies/0", timeout=5) as response:
                    study = json.loads(response.read())
                break
            except OSError:
                assert server.poll() is None and time.time() < deadline, "optuna-dashboard did not serve the study"
                time.sleep(1)
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert study["name"] == "digits_fixmatch" and study["objective_names"] == ["val/acc"]
