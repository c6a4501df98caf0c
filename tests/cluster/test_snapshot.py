"""Code snapshots (sesemi.cluster.snapshot): queued jobs run the code and configs they were submitted with.

Real files, a real git repository, real job processes: submitit's local executor and SLURM start the job exactly as
sesemi's launchers start theirs (submitit's ``python`` parameter from ``snapshot.python_command``, then
``-u -m sesemi.cluster.job -u -m submitit.core._submit FOLDER``), with the Hydra config loader pickled at submission
as the launchers pickle theirs; the live ``src/`` and ``configs/`` are edited after submission.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from cluster_testkit import cancel_jobs, needs_slurm, read_json, the_sweep_dir
from conftest import FAST

from sesemi.cluster import snapshot
from sesemi.errors import ConfigError

MODULE_V1 = 'VALUE = "v1"\n'
MODULE_V2 = 'VALUE = "v2"\n'
EXPERIMENT = "# @package _global_\noptimizer:\n  lr: {lr}\n"
LR_V1, LR_V2 = 0.123, 0.456


def make_workspace(root: Path) -> Path:
    """A user's folder: ``src/snapmark`` (the code) and ``configs/experiment/snapmark.yaml`` (a workspace config)."""
    (root / "src" / "snapmark").mkdir(parents=True)
    (root / "src" / "snapmark" / "__init__.py").write_text(MODULE_V1)
    (root / "configs" / "experiment").mkdir(parents=True)
    (root / "configs" / "experiment" / "snapmark.yaml").write_text(EXPERIMENT.format(lr=LR_V1))
    return root


def edit_live(workspace: Path) -> None:
    """What a user does while the jobs wait in the queue."""
    (workspace / "src" / "snapmark" / "__init__.py").write_text(MODULE_V2)
    (workspace / "configs" / "experiment" / "snapmark.yaml").write_text(EXPERIMENT.format(lr=LR_V2))


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    return make_workspace(tmp_path / "ws")


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    ).stdout


# ------------------------------------------------------------------------------------------ content addressing
def test_the_same_content_is_one_copy_a_change_another(workspace: Path):
    # Without sesemi's own package, whose live tree may change under a test (it is tested on its own below).
    sweep = workspace / "runs" / "s" / "1"
    first = snapshot.take(sweep, "src", workspace, with_sesemi=False)
    assert first.path.parent == sweep / ".code" and not first.reused
    assert (first.path / "src" / "snapmark" / "__init__.py").read_text() == MODULE_V1
    assert (first.path / "configs" / "experiment" / "snapmark.yaml").is_file()
    again = snapshot.take(sweep, "src", workspace, with_sesemi=False)
    assert again.path == first.path and again.reused
    # Every job of the sweep starts with the same command, naming the one copy.
    assert snapshot.python_command(again, "python3") == snapshot.python_command(first, "python3")

    edit_live(workspace)
    changed = snapshot.take(sweep, "src", workspace, with_sesemi=False)
    assert changed.path != first.path and not changed.reused
    assert (changed.path / "src" / "snapmark" / "__init__.py").read_text() == MODULE_V2
    assert (first.path / "src" / "snapmark" / "__init__.py").read_text() == MODULE_V1  # the old copy stays
    (workspace / "src" / "snapmark" / "__init__.py").write_text(MODULE_V1)
    (workspace / "configs" / "experiment" / "snapmark.yaml").write_text(EXPERIMENT.format(lr=LR_V1))
    back = snapshot.take(sweep, "src", workspace, with_sesemi=False)
    assert back.path == first.path and back.reused  # back to the first content: its copy


def test_concurrent_submissions_of_one_sweep_share_one_copy(workspace: Path):
    """The asynchronous sweeper launches from one thread per worker slot; each launch takes the snapshot."""
    sweep = workspace / "runs" / "s" / "1"
    taken: list[snapshot.Snapshot] = []
    threads = [
        threading.Thread(target=lambda: taken.append(snapshot.take(sweep, "src", workspace, with_sesemi=False)))
        for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(taken) == 8 and len({s.path for s in taken}) == 1
    assert [p.name for p in (sweep / ".code").iterdir()] == [taken[0].path.name]  # no staging dir left behind
    assert sum(not s.reused for s in taken) >= 1


# ------------------------------------------------------------------------------------------------ what is copied
def test_caches_hidden_folders_big_files_and_symlink_loops_are_left_out(
    workspace: Path, caplog: pytest.LogCaptureFixture
):
    src = workspace / "src"
    (src / "snapmark" / "__pycache__").mkdir()
    (src / "snapmark" / "__pycache__" / "__init__.cpython-311.pyc").write_bytes(b"\0" * 10)
    (src / "stray.pyc").write_bytes(b"\0")
    (src / ".git").mkdir()
    (src / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (src / ".ipynb_checkpoints").mkdir()
    (src / ".ipynb_checkpoints" / "nb.py").write_text("x = 1\n")
    (src / "snapmark.egg-info").mkdir()
    (src / "snapmark.egg-info" / "PKG-INFO").write_text("Name: snapmark\n")
    (src / "snapmark" / "classes.json").write_text('["a", "b"]')  # small package data is copied
    (src / "snapmark" / "fetch.sh").write_text("#!/bin/sh\necho hi\n")
    (src / "snapmark" / "fetch.sh").chmod(0o755)  # a script the user's code runs stays executable
    (src / "snapmark" / "weights.bin").write_bytes(b"\1" * (snapshot.MAX_FILE_BYTES + 1))
    (src / "snapmark" / "loop").symlink_to(src)  # a loop back to an ancestor
    (src / "self").symlink_to(".")
    (src / "gone.py").symlink_to(workspace / "nowhere.py")
    shared = workspace / "shared_code"
    shared.mkdir()
    (shared / "helpers.py").write_text("HELP = 1\n")
    (src / "shared").symlink_to(shared)  # a linked folder outside src/ is copied as files
    (src / "linked.py").symlink_to(shared / "helpers.py")

    with caplog.at_level(logging.WARNING, logger="sesemi.cluster.snapshot"):
        snap = snapshot.take(workspace / "runs" / "s", "src", workspace, with_sesemi=False)
    manifest = read_json(snap.path / snapshot.MANIFEST)
    assert sorted(manifest["files"]) == [
        "configs/experiment/snapmark.yaml",
        "src/linked.py",
        "src/shared/helpers.py",
        "src/snapmark/__init__.py",
        "src/snapmark/classes.json",
        "src/snapmark/fetch.sh",
    ]
    assert os.access(snap.path / "src" / "snapmark" / "fetch.sh", os.X_OK)
    assert not os.access(snap.path / "src" / "snapmark" / "classes.json", os.X_OK)
    assert not (snap.path / "src" / "shared").is_symlink() and not (snap.path / "src" / "linked.py").is_symlink()
    assert (snap.path / "src" / "shared" / "helpers.py").read_text() == "HELP = 1\n"
    skipped = {s["path"]: s["why"] for s in manifest["skipped"]}
    assert skipped["src/snapmark/weights.bin"] == "over 1 MiB"
    assert skipped["src/snapmark/loop"].startswith("a symlink loop") and skipped["src/self"].startswith("a symlink")
    assert skipped["src/gone.py"].startswith("a broken symlink")
    assert "leaves out 1 file(s) over 1 MiB: src/snapmark/weights.bin (1.0 MiB)" in caplog.text

    # What is left out is not part of the content: a new cache file or big file changes nothing.
    (src / "snapmark" / "__pycache__" / "other.cpython-311.pyc").write_bytes(b"\0")
    (src / "snapmark" / "weights.bin").write_bytes(b"\2" * (snapshot.MAX_FILE_BYTES + 2))
    assert snapshot.take(workspace / "runs" / "s", "src", workspace, with_sesemi=False).reused


def test_too_much_to_copy_is_an_error_naming_the_opt_out(workspace: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(snapshot, "MAX_FILES", 3)
    for n in range(3):
        (workspace / "src" / f"data_{n}.csv").write_text("1,2\n")
    with pytest.raises(ConfigError) as err:
        snapshot.take(workspace / "runs" / "s", "src", workspace, with_sesemi=False)
    assert err.value.key == "hydra.launcher.snapshot" and "hydra.launcher.snapshot=false" in err.value.fix
    assert not (workspace / "runs").exists()  # nothing written


def test_sesemi_from_a_source_tree_is_copied_with_its_built_in_configs(workspace: Path):
    package, why = snapshot.sesemi_source()
    if package is None:
        pytest.skip(f"sesemi is {why}: an installed sesemi is not copied")
    snap = snapshot.take(workspace / "runs" / "s", "src", workspace)
    assert snap.lib == snap.path / "lib" and snap.roots["lib/sesemi"] == package
    copied = snap.path / "lib" / "sesemi"
    assert (copied / "cluster" / "snapshot.py").read_bytes() == (package / "cluster" / "snapshot.py").read_bytes()
    # sesemi/configs is a symlink in a source tree: the copy is real files.
    assert not (copied / "configs").is_symlink() and (copied / "configs" / "train.yaml").is_file()
    assert not list(copied.rglob("__pycache__"))
    assert read_json(snap.path / snapshot.MANIFEST)["sesemi"]["copied"] is True
    without = snapshot.take(workspace / "runs" / "s", "src", workspace, with_sesemi=False)
    assert without.lib is None and not (without.path / "lib").exists() and without.path != snap.path


# ------------------------------------------------------------------------------------------------- git manifest
def test_the_manifest_records_the_commit_the_uncommitted_diff_and_untracked_files(workspace: Path):
    git(workspace, "init", "-q")
    (workspace / ".gitignore").write_text("runs/\n")
    git(workspace, "add", "-A")
    git(workspace, "commit", "-q", "-m", "first")
    commit = git(workspace, "rev-parse", "HEAD").strip()
    clean = snapshot.take(workspace / "runs" / "clean", "src", workspace, with_sesemi=False)
    (record,) = read_json(clean.path / snapshot.MANIFEST)["git"]
    assert record["repo"] == str(workspace) and record["commit"] == commit
    assert record["diff"] is None and record["untracked"] == [] and sorted(record["paths"]) == ["configs", "src"]

    (workspace / "src" / "snapmark" / "__init__.py").write_text(MODULE_V2)  # uncommitted
    (workspace / "configs" / "experiment" / "new.yaml").write_text("# @package _global_\n")  # untracked
    (workspace / "notes.txt").write_text("not part of the snapshot\n")
    dirty = snapshot.take(workspace / "runs" / "dirty", "src", workspace, with_sesemi=False)
    manifest = read_json(dirty.path / snapshot.MANIFEST)
    (record,) = manifest["git"]
    assert record["commit"] == commit and record["untracked"] == ["configs/experiment/new.yaml"]
    diff = (dirty.path / record["diff"]).read_text()
    assert '-VALUE = "v1"' in diff and '+VALUE = "v2"' in diff and "notes.txt" not in diff
    # The diff applies to the commit and gives the snapshot's code back.
    checkout = workspace.parent / "checkout"
    git(workspace.parent, "clone", "-q", str(workspace), str(checkout))
    git(checkout, "apply", str(dirty.path / record["diff"]))
    assert (checkout / "src" / "snapmark" / "__init__.py").read_text() == MODULE_V2
    assert set(manifest) >= {"digest", "created", "roots", "files", "bytes", "skipped", "seconds", "launch_dir"}
    assert manifest["files"]["src/snapmark/__init__.py"] == len(MODULE_V2)


# --------------------------------------------------------------------------------------------- how jobs start
def test_the_job_command_puts_the_snapshot_ahead_of_the_installed_code(tmp_path: Path, monkeypatch):
    sweep = tmp_path / "a sweep"  # a space: the command is a shell line in sbatch, split by shlex locally
    snap = snapshot.take(sweep, "src", make_workspace(tmp_path / "ws"))
    monkeypatch.setenv("PYTHONPATH", "/opt/mine")
    env = snapshot.job_environment(snap)
    expected = [str(snap.src)] if snap.lib is None else [str(snap.lib), str(snap.src)]
    assert env["PYTHONPATH"].split(os.pathsep) == [*expected, "/opt/mine"]
    assert env[snapshot.ENV] == str(snap.path) and "PYTHONSAFEPATH" not in env
    command = snapshot.python_command(snap, "/opt/py/bin/python")
    words = shlex.split(command)
    assert words[0] == "env" and words[-1] == "/opt/py/bin/python"
    assert dict(w.split("=", 1) for w in words[1:-1]) == env

    submitit = pytest.importorskip("submitit")
    from sesemi.compat import submitit as compat_submitit

    executor = submitit.AutoExecutor(folder=str(tmp_path / "jobs"), cluster="slurm", slurm_python=command)
    compat_submitit.start_jobs_with(executor, "sesemi.cluster.job")
    script = compat_submitit.sbatch_script(executor, 2)
    assert f"{command} -u -m sesemi.cluster.job -u -m submitit.core._submit" in script


def test_launched_from_sesemis_clone_the_working_directory_does_not_shadow_the_snapshot(tmp_path: Path):
    clone = make_workspace(tmp_path / "clone")
    (clone / "sesemi").mkdir()
    (clone / "sesemi" / "__init__.py").write_text("")
    snap = snapshot.take(tmp_path / "sweep", "src", clone)
    if snap.lib is None:
        pytest.skip("sesemi is installed: its copy is not taken")
    assert snapshot.job_environment(snap)["PYTHONSAFEPATH"] == "1"


def test_the_search_path_of_a_config_loader_is_repointed(workspace: Path, monkeypatch: pytest.MonkeyPatch):
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    from sesemi.compat.hydra import repoint_search_path

    monkeypatch.chdir(workspace)
    with initialize_config_module("sesemi.configs"):
        loader = GlobalHydra.instance().config_loader()
        live = workspace / "configs"
        assert str(live) in [s.path for s in loader.get_sources()]  # sesemi's workspace plugin put it there
        copy = workspace / "copy"
        shutil.copytree(live, copy)
        assert repoint_search_path(loader, f"file://{live}", f"file://{copy}")
        sources = [s.path for s in loader.get_sources()]
        assert str(copy) in sources and str(live) not in sources
        assert f"file://{copy}" in [e.path for e in loader.get_search_path().get_path()]
        assert not repoint_search_path(loader, f"file://{live}", "file:///elsewhere")


def test_run_src_dir_is_pinned_to_the_copy_only_where_it_names_the_copied_folder(
    workspace: Path, monkeypatch: pytest.MonkeyPatch
):
    from omegaconf import OmegaConf

    snap = snapshot.take(workspace / "runs" / "s", "src", workspace, with_sesemi=False)
    monkeypatch.chdir(workspace)
    assert snapshot.current() is None and snapshot.enter() is None  # a process started without a snapshot
    monkeypatch.setenv(snapshot.ENV, str(snap.path))
    monkeypatch.setattr(sys, "path", [str(workspace / "src"), *sys.path])
    assert snapshot.enter() == snap
    assert sys.path[0] == str(snap.src) and str(workspace / "src") not in sys.path
    for given, pinned in [("src", str(snap.src)), (str(workspace / "src"), str(snap.src)), ("other", "other")]:
        cfg = OmegaConf.create({"run": {"src_dir": given}})
        OmegaConf.set_struct(cfg, True)
        snapshot.pin_src_dir(cfg)
        assert cfg.run.src_dir == pinned


def test_a_job_that_imports_sesemi_from_elsewhere_says_so(tmp_path: Path):
    workspace = make_workspace(tmp_path / "ws")
    snap = snapshot.take(tmp_path / "sweep", "src", workspace)
    if snap.lib is None:
        pytest.skip("sesemi is installed: its copy is not taken")
    probe = "import logging; logging.basicConfig(); from sesemi.cluster import snapshot; snapshot.enter()"
    env = {**os.environ, snapshot.ENV: str(snap.path)}  # the snapshot, but not its PYTHONPATH
    run = {"cwd": workspace, "capture_output": True, "text": True, "check": True}
    proc = subprocess.run([sys.executable, "-c", probe], env=env, **run)
    assert "sesemi: this job runs sesemi from" in proc.stderr and str(snap.lib) in proc.stderr
    proc = subprocess.run([*shlex.split(snapshot.python_command(snap)), "-c", probe], **run)
    assert proc.stderr == ""


# ------------------------------------------------------------------------------------- the job side, for real
# What the submitted job runs (as `exec(PROBE, {...})`): the launcher's job side, in order: Hydra's singletons of the
# submission back, enter(), then the job composes its config with the config loader pickled at submission, the run
# puts run.src_dir on sys.path and imports the user's code; it writes what it saw (one record per attempt).
PROBE = """
import importlib.resources, json, os, subprocess, sys, time
from pathlib import Path

from sesemi.cluster import snapshot
from sesemi.compat.hydra import restore_singletons

restore_singletons(SINGLETONS)
snap = snapshot.enter(LOADER)
from hydra.types import RunMode

cfg = LOADER.load_configuration("train", ["experiment=snapmark"], run_mode=RunMode.RUN)
snapshot.pin_src_dir(cfg, snap)
from sesemi.workspace import add_src_dir

add_src_dir(cfg.run.src_dir)
import sesemi
import snapmark

attempt = int(os.environ.get("SLURM_RESTART_COUNT", "0"))
record = {
    "attempt": attempt,
    "value": snapmark.VALUE,
    "module": snapmark.__file__,
    "lr": cfg.optimizer.lr,
    "src_dir": cfg.run.src_dir,
    "sesemi": sesemi.__file__,
    "builtin_configs": str(importlib.resources.files("sesemi.configs")),
    "sources": [s.path for s in LOADER.get_sources()],
    "snapshot": str(snap.path) if snap else None,
}
Path(OUT, f"attempt_{attempt}.json").write_text(json.dumps(record))
if REQUEUE and attempt == 0:
    subprocess.run(["scontrol", "requeue", os.environ["SLURM_JOB_ID"]], check=True)
    time.sleep(300)  # SLURM stops this attempt
"""


def submission_state(workspace: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    """The Hydra config loader and singletons of a submission from ``workspace``, as the launcher pickles them with
    each job (``HydraContext.config_loader``, ``Singleton.get_state()``)."""
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    from sesemi.compat.hydra import singleton_state

    monkeypatch.chdir(workspace)
    with initialize_config_module("sesemi.configs"):
        return {"LOADER": GlobalHydra.instance().config_loader(), "SINGLETONS": singleton_state()}


def submit_probe(executor, state: dict, out: Path, requeue: bool = False):
    out.mkdir(parents=True, exist_ok=True)
    return executor.submit(exec, PROBE, {**state, "OUT": str(out), "REQUEUE": requeue})


def squeue_state(job_id: str) -> str:
    return subprocess.run(
        ["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True, text=True, check=True
    ).stdout.strip()


def check_ran_the_snapshot(record: dict, snap: snapshot.Snapshot) -> None:
    assert record["snapshot"] == str(snap.path)
    assert record["value"] == "v1" and Path(record["module"]).is_relative_to(snap.path / "src"), record
    assert record["lr"] == LR_V1 and str(snap.path / "configs") in record["sources"], record
    assert record["src_dir"] == str(snap.path / "src")
    if snap.lib is not None:  # sesemi runs from a source tree here: the job runs the snapshot's copy
        assert Path(record["sesemi"]).is_relative_to(snap.lib), record
        assert Path(record["builtin_configs"]).is_relative_to(snap.lib), record


def test_a_local_job_runs_the_code_and_configs_it_was_submitted_with(
    workspace: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    submitit = pytest.importorskip("submitit")
    from sesemi.compat import submitit as compat_submitit

    state = submission_state(workspace, monkeypatch)
    snap = snapshot.take(workspace / "runs" / "s", "src", workspace)
    executor = submitit.AutoExecutor(
        folder=str(tmp_path / "jobs"), cluster="local", local_python=snapshot.python_command(snap)
    )
    compat_submitit.start_jobs_with(executor, "sesemi.cluster.job")
    executor.update_parameters(timeout_min=5)
    edit_live(workspace)  # before the job starts: submitit pickled the job already
    job = submit_probe(executor, state, tmp_path / "out")
    job.result()
    check_ran_the_snapshot(read_json(tmp_path / "out" / "attempt_0.json"), snap)

    # The same probe without the snapshot's command sees the edits: what the snapshot prevents.
    plain = submitit.AutoExecutor(folder=str(tmp_path / "plain_jobs"), cluster="local")
    compat_submitit.start_jobs_with(plain, "sesemi.cluster.job")
    plain.update_parameters(timeout_min=5)
    submit_probe(plain, state, tmp_path / "plain").result()
    live = read_json(tmp_path / "plain" / "attempt_0.json")
    assert live["snapshot"] is None and live["value"] == "v2" and live["lr"] == LR_V2
    assert Path(live["module"]).is_relative_to(workspace / "src")


@pytest.mark.slow
@pytest.mark.slurm
@needs_slurm
def test_a_slurm_job_and_its_requeued_attempt_run_the_submitted_code(
    workspace: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    submitit = pytest.importorskip("submitit")
    from sesemi.compat import submitit as compat_submitit

    state = submission_state(workspace, monkeypatch)
    snap = snapshot.take(workspace / "runs" / "s", "src", workspace)
    executor = submitit.AutoExecutor(
        folder=str(tmp_path / "jobs"), cluster="slurm", slurm_python=snapshot.python_command(snap)
    )
    compat_submitit.start_jobs_with(executor, "sesemi.cluster.job")
    executor.update_parameters(
        slurm_partition="debug", cpus_per_task=1, timeout_min=10, slurm_additional_parameters={"hold": True}
    )
    job = submit_probe(executor, state, tmp_path / "out", requeue=True)
    try:
        edit_live(workspace)  # while the job is held in the queue
        assert squeue_state(str(job.job_id)) == "PENDING"
        subprocess.run(["scontrol", "release", str(job.job_id)], check=True)
        deadline = time.monotonic() + 400
        while not (tmp_path / "out" / "attempt_1.json").is_file():
            assert time.monotonic() < deadline, "the requeued attempt never ran"
            time.sleep(1)
        for attempt in (0, 1):
            check_ran_the_snapshot(read_json(tmp_path / "out" / f"attempt_{attempt}.json"), snap)
    finally:
        subprocess.run(["scancel", str(job.job_id)], capture_output=True, check=False)


# ------------------------------------------------------------------------------------- the launcher, end to end
PROBE_CALLBACK = '''
import json, os, time
from pathlib import Path

from pytorch_lightning.callbacks import Callback

import snapmark

ATTEMPT = int(os.environ.get("SLURM_RESTART_COUNT", "0"))


class Probe(Callback):
    """Writes, into the run dir, which code and config each attempt of the run trained with; slows the first
    attempt down, so that it can be requeued mid-training."""

    def on_train_start(self, trainer, pl_module):
        run_dir = Path(pl_module.config["run"]["output_dir"])
        record = {"value": snapmark.VALUE, "module": snapmark.__file__, "lr": pl_module.config["optimizer"]["lr"]}
        (run_dir / f"probe_{ATTEMPT}.json").write_text(json.dumps(record))

    def on_train_batch_end(self, trainer, *args):
        if ATTEMPT == 0:
            time.sleep(0.5)
'''
E2E = [
    "-m",
    "hydra/launcher=slurm_cpu",
    "hydra.launcher.partition=debug",
    "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.wait=false",
    "hydra.launcher.additional_parameters={hold:true}",
    "run.id=snap",
    "experiment=snapmark",
    "run.seed=0,1",
    "+callbacks.probe._target_=snapmark.probe.Probe",
    "trainer.max_steps=20",
]


@pytest.mark.slow
@pytest.mark.slurm
@needs_slurm
def test_a_detached_grid_runs_the_code_and_config_it_was_submitted_with(workspace: Path):
    (workspace / "src" / "snapmark" / "probe.py").write_text(PROBE_CALLBACK)
    proc = subprocess.run(
        [sys.executable, "-m", "sesemi.train", *FAST, *E2E],
        cwd=workspace,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    try:
        sweep_dir = the_sweep_dir(workspace, "snap")
        jobs = read_json(sweep_dir / "jobs.json")
        ids = [j["job_id"] for j in jobs["jobs"]]
        assert {squeue_state(i) for i in ids} == {"PENDING"}  # held
        (code,) = (sweep_dir / snapshot.STORE).iterdir()  # one snapshot for the whole grid
        edit_live(workspace)
        (workspace / "src" / "snapmark" / "probe.py").write_text("raise ImportError('the live src was imported')\n")
        subprocess.run(["scontrol", "release", *ids], check=True)
        requeued = False
        deadline = time.monotonic() + 420
        while not all((sweep_dir / str(j["num"]) / "metrics.json").is_file() for j in jobs["jobs"]):
            assert time.monotonic() < deadline, "the jobs did not finish"
            if not requeued and (sweep_dir / "0" / "checkpoints" / "last.ckpt").is_file():
                subprocess.run(["scontrol", "requeue", ids[0]], check=True)
                requeued = True
            time.sleep(1)
        for job in jobs["jobs"]:
            run_dir = Path(job["run_dir"])
            probes = sorted(run_dir.glob("probe_*.json"))
            assert probes, run_dir
            for probe in probes:
                record = read_json(probe)
                assert record["value"] == "v1" and record["lr"] == LR_V1, (probe, record)
                assert Path(record["module"]).is_relative_to(code / "src"), record
        assert len(list((sweep_dir / "0").glob("probe_*.json"))) == 2  # the requeued attempt too
    finally:
        cancel_jobs(workspace)
