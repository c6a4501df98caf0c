"""``python -m sesemi.status`` (sesemi.status): the table of many jobs, the CLI's exit codes on a sweep dir, a run dir
and a runs dir, ``--wait`` on a terminal; and over what real commands leave behind: a local grid, a local Optuna sweep
and single runs, read as a user reads them (the printed table)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from cluster_testkit import fake_sweep
from conftest import run_cli

from sesemi import status
from sesemi.cluster.tracking import collect, shorten
from sesemi.rundir import RunRecord


def _table(text: str) -> list[dict[str, str]]:
    """The printed table's rows as {column: cell} (columns are separated by two spaces or more)."""
    lines = text.splitlines()
    head = lines.index(next(line for line in lines if line.startswith("job ")))
    columns = re.split(r"\s{2,}", lines[head].strip())
    rows = []
    for line in lines[head + 1 :]:
        if line.startswith(("- ", "  ")) or re.match(r"\d+ jobs: ", line):
            break
        cells = re.split(r"\s{2,}", line.strip())
        assert len(cells) == len(columns), line
        rows.append(dict(zip(columns, cells)))
    return rows


def _status(path: Path | str, cwd: Path) -> str:
    return run_cli([str(path)], cwd, fast=False, module="sesemi.status", check=False).stdout


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workspace after a local grid, a local Optuna sweep and three single runs (one refused)."""
    ws = tmp_path_factory.mktemp("status")
    run_cli(["-m", "run.id=grid", "optimizer.lr=0.01,0.1"], ws)
    run_cli(["-m", "hparams_search=digits_fixmatch", "hydra.sweeper.n_trials=2"], ws)
    run_cli([], ws)
    run_cli(["optimizer.lr=0.05"], ws)
    assert run_cli(["optimizer.lr=-1"], ws, check=False).returncode == 2
    return ws


@pytest.mark.slow
def test_a_local_grid_shows_each_point(runs: Path):
    (sweep,) = (runs / "runs" / "grid").iterdir()
    rows = _table(_status(sweep, runs))
    assert [(r["job"], r["point"], r["state"], r["step"]) for r in rows] == [
        ("0", "optimizer.lr=0.01", "completed", "6/6"),
        ("1", "optimizer.lr=0.1", "completed", "6/6"),
    ]


@pytest.mark.slow
def test_a_local_optuna_sweep_shows_each_trials_parameters(runs: Path):
    sweep = runs / "runs" / "sweeps" / "digits_fixmatch"
    rows = _table(_status(sweep, runs))
    assert [r["job"] for r in rows] == ["trial_0000", "trial_0001"]
    for row in rows:
        overrides = yaml.safe_load((sweep / row["job"] / ".hydra" / "overrides.yaml").read_text())
        swept = [o for o in overrides if o.split("=")[0] in ("optimizer.lr", "optimizer.weight_decay")]
        assert row["point"].startswith(swept[0] + " ")  # the trial's own draw, cut after a whole override
        assert row["point"].endswith(" ...") and len(row["point"]) <= status.POINT_CHARS
    for row in collect(sweep, use_sacct=False):  # in full: every parameter (drawn alike or not), no fixed override
        keys = [o.split("=")[0] for o in row.point.split()]
        assert keys == [
            "optimizer.lr",
            "optimizer.weight_decay",
            "method.loss_heads.fixmatch.threshold",
            "method.loss_heads.fixmatch.weight",
            "model.backbone.width",
        ]


@pytest.mark.slow
def test_a_runs_dir_names_every_run_by_its_dir_sorted(runs: Path):
    text = _status(runs / "runs", runs)
    rows = _table(text)
    names = [r["job"] for r in rows]
    stamps = sorted(p.name for p in (runs / "runs" / "default").iterdir())
    (grid,) = (p.name for p in (runs / "runs" / "grid").iterdir())
    assert names == [
        *(f"default/{s}" for s in stamps),
        f"grid/{grid}/0",
        f"grid/{grid}/1",
        "sweeps/digits_fixmatch/trial_0000",
        "sweeps/digits_fixmatch/trial_0001",
    ]
    by_name = {r["job"]: r for r in rows}
    default = {by_name[f"default/{s}"]["point"]: by_name[f"default/{s}"]["state"] for s in stamps}
    assert default == {"-": "completed", "optimizer.lr=0.05": "completed", "optimizer.lr=-1": "failed"}
    (failed,) = [n for n in names if by_name[n]["state"] == "failed"]
    assert f"- job {failed} failed: ConfigError: optimizer: Invalid learning rate: -1." in text
    assert f"  run dir: runs/{failed}" in text
    assert text.splitlines()[-1] == "7 jobs: 6 completed, 1 failed"


@pytest.mark.slow
def test_a_long_error_is_cut_at_a_word_boundary(runs: Path):
    (stamp,) = [
        p
        for p in (runs / "runs" / "default").iterdir()
        if "optimizer.lr=-1" in (p / ".hydra" / "overrides.yaml").read_text()
    ]
    words = " ".join(f"word{i}" for i in range(100))  # 589 characters
    RunRecord(stamp).fail(RuntimeError(words))
    text = _status(stamp, runs)
    (line,) = [line for line in text.splitlines() if line.startswith("- job ")]
    error = line.split(" failed: ", 1)[1]
    assert error.endswith(" ...") and len(error) <= 300
    assert set(error.removeprefix("RuntimeError: ").removesuffix(" ...").split()) <= set(words.split())


def test_shorten_keeps_whole_words():
    assert shorten("optimizer.lr=0.1 optimizer.weight_decay=0.0001", 24) == "optimizer.lr=0.1 ..."
    assert shorten("a  b\nc", 10) == "a b c"
    assert shorten("x" * 30, 10) == "xxxxxxx..."
    assert all(len(shorten("ab cd ef gh ij", w)) <= w for w in range(4, 16))


def test_two_hundred_jobs_show_the_counts_first_then_the_rows_that_need_attention(tmp_path: Path):
    states = ["completed"] * 190 + ["running"] * 7 + ["failed"] * 3
    text = status.render(collect(fake_sweep(tmp_path, states)))
    lines = text.splitlines()
    assert lines[0] == "200 jobs: 190 completed, 7 running, 3 failed"
    assert lines[1] == "rows that need attention (3; --all shows all):"
    assert sum(" failed " in line for line in lines) == 3 and " running " not in text
    assert "- job 197 (9_197) failed: ValueError: boom" in text
    assert lines[-1] == lines[0]  # and again as the footer
    assert len(status.render(collect(tmp_path / "runs"), show_all=True).splitlines()) > 200


def test_the_cli_on_a_sweep_dir_a_run_dir_and_a_runs_dir(workdir: Path):
    sweep = fake_sweep(workdir, ["completed", "completed"])
    for path in (sweep, sweep / "1", "runs"):
        proc = run_cli([str(path)], workdir, fast=False, module="sesemi.status")
        assert proc.stdout.splitlines()[-1].endswith("completed"), proc.stdout
    (sweep / "1" / "status.json").write_text(json.dumps({"state": "failed", "error": "ValueError: boom"}))
    proc = run_cli([str(sweep)], workdir, fast=False, module="sesemi.status", check=False)
    assert proc.returncode == 1 and "- job 1 (9_1) failed: ValueError: boom" in proc.stdout
    proc = run_cli([str(workdir / "nowhere")], workdir, fast=False, module="sesemi.status", check=False)
    assert proc.returncode == 2 and proc.stderr.startswith("sesemi: error: ") and "Traceback" not in proc.stderr


def test_wait_redraws_the_table_in_place_on_a_terminal(workdir: Path):
    """``--wait`` on a terminal: the table redrawn (cursor home, clear), not a line per change; exit 0 when done."""
    import shlex
    import shutil
    import subprocess
    import sys

    if shutil.which("script") is None:
        pytest.skip("util-linux `script` (a pseudo-terminal) is not installed")
    sweep = fake_sweep(workdir, ["completed", "completed"])
    command = shlex.join([sys.executable, "-m", "sesemi.status", str(sweep), "--wait"])
    proc = subprocess.run(["script", "-qec", command, "/dev/null"], cwd=workdir, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "\x1b[H\x1b[2J" in proc.stdout and "(every 10 s; Ctrl-C stops following)" in proc.stdout
    assert proc.stdout.rstrip().endswith("2 jobs: 2 completed")
