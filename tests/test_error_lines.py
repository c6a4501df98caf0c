"""Mistakes that stop a command before anything runs are one ``sesemi: error:`` line, exit status 2, no traceback,
and nothing made (issue 30): a SLURM launcher on a machine without SLURM, a YAML syntax error in the workspace's own
configs, a study journal in a read-only folder. Each through the real CLI, the workspace byte-for-byte unchanged;
a Fix that is an override is pasted into a second command that runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import FAST, read_json, run_cli, run_dirs
from faults import snapshot
from test_bad_files import override_in

pytestmark = pytest.mark.slow  # each case starts the CLI (torch, Lightning): 5-10 s on 2 cores


def refused(args: list[str], workdir: Path, key: str, **kwargs) -> str:
    """Run the CLI: exit 2, one error line naming ``key``, no traceback, every file as it was. Returns the line."""
    before = snapshot(workdir)
    proc = run_cli(args, workdir, check=False, **kwargs)
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr[-3000:]
    errors = [line for line in (proc.stderr + proc.stdout).splitlines() if "error:" in line]
    assert len(errors) == 1 and errors[0].startswith(f"sesemi: error: {key}: "), proc.stderr[-3000:]
    assert snapshot(workdir) == before
    assert not (workdir / "runs").exists() and not list(workdir.rglob("multirun.yaml"))
    return errors[0]


def test_a_slurm_launcher_on_a_machine_without_slurm_is_one_error_line(workdir: Path):
    """No sbatch, srun or sacct on PATH (a laptop): before, submitit's "Could not detect srun" traceback, and a
    sweep dir with a stray multirun.yaml. A dry run needs srun too (submitit renders the script)."""
    no_slurm = {"PATH": os.path.dirname(sys.executable)}
    sweep = ["-m", "hydra/launcher=slurm", "run.id=lr_scan", "optimizer.lr=0.01,0.1"]
    line = refused(sweep, workdir, "hydra/launcher", env=no_slurm)
    assert "is slurm, but SLURM's commands are not on this machine's PATH (missing: sbatch, srun, sacct)" in line
    line = refused([*sweep, "hydra.launcher.dry_run=true"], workdir, "hydra/launcher", env=no_slurm)
    assert "(missing: srun)" in line
    # The Fix's override: the same sweep, its jobs one after another on this machine.
    pasted = [o if not o.startswith("hydra/launcher=") else override_in(line, "hydra/launcher") for o in sweep]
    run_cli(pasted, workdir, env=no_slurm)
    dirs = run_dirs(workdir / "runs" / "lr_scan")
    assert [d.name for d in dirs] == ["0", "1"]
    assert all(read_json(d / "status.json")["state"] == "completed" for d in dirs)


def test_a_yaml_syntax_error_in_the_workspace_configs_names_the_file_and_line(workdir: Path):
    """The user's configs/ is read before the built-in configs: a syntax error there was Hydra's 60-line traceback
    ending in the parser's message."""
    mine = workdir / "configs" / "data" / "mine.yaml"
    mine.parent.mkdir(parents=True)
    mine.write_text("defaults:\n  - digits\n  - _self_\nlabels_per_class: [4\n")  # an unclosed flow sequence
    line = refused(["data=mine"], workdir, "configs/data/mine.yaml")
    assert "line 5, column 1: YAML syntax: did not find expected ',' or ']'" in line, line
    assert "(while parsing a flow sequence at line 4)" in line and "Fix: correct the YAML at " in line, line
    mine.write_text("defaults:\n  - digits\n  - _self_\nlabels_per_class: 4\n")  # corrected: the run reads it
    run_cli(["data=mine"], workdir)
    (run_dir,) = run_dirs(workdir)
    assert read_json(run_dir / "status.json")["state"] == "completed"


@pytest.fixture
def read_only_dir(tmp_path: Path):
    """A read-only filesystem (root writes into any folder whatever its mode): a tmpfs mounted read-only."""
    folder = tmp_path / "ro"
    folder.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)], capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a read-only tmpfs here: {made.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


@pytest.mark.parametrize(
    ("key", "where"),
    [("hydra.sweeper.storage", "{ro}/x.journal"), ("hydra.sweeper.dir", "{ro}/digits_fixmatch")],
    ids=["journal", "sweep_dir"],
)
def test_a_study_journal_in_a_read_only_folder_is_one_error_line(
    workdir: Path, read_only_dir: Path, key: str, where: str
):
    """A journal (given, or the default one in a given sweep dir) on a read-only filesystem: before, an OSError
    traceback from Optuna's journal backend after the sweep dir was made. The Fix's override runs the sweep."""
    sweep = [
        "-m",
        "hparams_search=digits_fixmatch",
        "hydra/sweeper=optuna_sync",
        "hydra.sweeper.n_trials=1",
        f"{key}={where.format(ro=read_only_dir)}",
    ]
    line = refused([*FAST, *sweep], workdir, key, fast=False)
    assert f"the study's journal {read_only_dir}/" in line and "cannot be written (Read-only file system)" in line
    pasted = [o if not o.startswith(f"{key}=") else override_in(line, key) for o in sweep]
    run_cli([*FAST, *pasted], workdir, fast=False)
    trial = workdir / "runs" / "sweeps" / "digits_fixmatch" / "trial_0000"
    assert read_json(trial / "status.json")["state"] == "completed"
