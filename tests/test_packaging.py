"""Installing sesemi: `pip install .` (a real wheel, not the editable install) finds the built-in configs from any
directory, and the README's first line works verbatim in a fresh clone."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import FAST, read_json, run_dirs

ROOT = Path(__file__).parents[1]


@pytest.mark.slow
def test_wheel_carries_configs_and_trains_from_an_empty_directory(tmp_path: Path):
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", wheels, ROOT],
        check=True,
        capture_output=True,
    )
    (wheel,) = wheels.glob("sesemi-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "sesemi/configs/train.yaml" in names
    assert "sesemi/configs/hydra/output/sesemi.yaml" in names
    packages = {str(p.parent.relative_to(ROOT)).replace("/", ".") for p in (ROOT / "sesemi").rglob("__init__.py")}
    assert packages <= {n.rsplit("/", 1)[0].replace("/", ".") for n in names}, "a package is missing from pyproject"

    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", site, wheel],
        check=True,
        capture_output=True,
    )
    empty = tmp_path / "elsewhere"
    empty.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site)}
    where = subprocess.run(
        [sys.executable, "-c", "import sesemi; print(sesemi.__file__)"],
        cwd=empty,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert where.stdout.startswith(str(site))
    proc = subprocess.run(
        [sys.executable, "-m", "sesemi.train", *FAST], cwd=empty, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run_dir,) = run_dirs(empty / "runs" / "default")
    assert read_json(run_dir / "status.json")["state"] == "completed"


def readme_quickstart() -> list[str]:
    """The two lines of the README's first code block: install-and-train, and the development setup + tests."""
    block = re.search(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    assert block, "the README starts with a bash block"
    return block.group(1).strip().splitlines()


@pytest.mark.slow
def test_readme_first_line_trains_in_a_fresh_clone(tmp_path: Path):
    """The README's first line, as written, from the root of a fresh clone of this commit with a fresh venv (the
    torch wheels come from the local package index, ~5.5 GB installed). The clone, venv included, is removed."""
    first = readme_quickstart()[0]
    assert first.startswith("python3 -m venv .venv && .venv/bin/pip install ") and "sesemi.train" in first
    clone = tmp_path / "clone"
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True)
    subprocess.run(["git", "clone", "-q", "--no-checkout", ROOT, clone], check=True)
    subprocess.run(["git", "checkout", "-q", head.stdout.strip()], cwd=clone, check=True)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    try:
        # Its own session, so that a timeout stops pip or the training too, not only the shell.
        proc = subprocess.Popen(
            ["bash", "-c", first],
            cwd=clone,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        try:
            output, _ = proc.communicate(timeout=3600)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        assert proc.returncode == 0, output[-6000:]
        (run_dir,) = run_dirs(clone / "runs" / "default")
        assert read_json(run_dir / "status.json")["state"] == "completed"
        assert read_json(run_dir / "metrics.json")["global_step"] == 600
        training = output.split("Successfully installed", 1)[-1].split("\n", 1)[-1]  # after pip's output
        assert f"sesemi: run dir {run_dir}" in training
        assert "Warning" not in training, training[-6000:]
    finally:
        shutil.rmtree(clone, ignore_errors=True)


def test_readme_second_line_is_what_ci_runs():
    """The second line (dev setup + the whole suite) is tested by CI itself, .ci/run; this test does not recurse."""
    second, comment = readme_quickstart()[1].split("  # ", 1)
    assert second == "scripts/setup_dev.sh && .venv/bin/python -m pytest"
    assert "as root" in comment and "SLURM" in comment and "PostgreSQL" in comment  # what it does to the machine
    ci = (ROOT / ".ci" / "run").read_text()
    assert "scripts/setup_dev.sh" in ci and ".venv/bin/python -m pytest" in ci


def test_readme_hydra13_subset_command_is_what_ci_runs():
    """README, "Hydra versions": the subset's command on .venv-hydra13 is the one .ci/run runs, and each line of
    tests/hydra13_subset.txt names a test file (and test) that exists."""
    section = (ROOT / "README.md").read_text().split("## Hydra versions", 1)[1]
    (command,) = re.findall(r"`(\.venv-hydra13/bin/python -m pytest [^`]*)`", section)
    assert any(line.startswith(command) for line in (ROOT / ".ci" / "run").read_text().splitlines())
    subset = [line for line in (ROOT / "tests/hydra13_subset.txt").read_text().splitlines() if line and line[0] != "#"]
    assert subset
    for test_id in subset:
        path, _, name = test_id.partition("::")
        assert (ROOT / path).is_file(), test_id
        assert not name or f"def {name}(" in (ROOT / path).read_text(), test_id


# The unrelated project of the same name on the package index: `pip install -U sesemi` must not take it for newer.
PYPI_SESEMI = "0.3.0"


def test_the_package_metadata(tmp_path: Path):
    """What the package index shows and pip compares, as the build backend writes it (PEP 517's metadata hook): the
    version is sesemi.__version__ and above the unrelated sesemi 0.3.0; authors, keywords, classifiers, license."""
    from email.parser import Parser

    from packaging.version import Version

    import sesemi

    hook = (
        "import sys; from setuptools import build_meta; print(build_meta.prepare_metadata_for_build_wheel(sys.argv[1]))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", hook, tmp_path], cwd=ROOT, capture_output=True, text=True, timeout=300, check=True
    )
    dist_info = proc.stdout.strip().splitlines()[-1]
    meta = Parser().parsestr((tmp_path / dist_info / "METADATA").read_text())
    assert meta["Name"] == "sesemi" and meta["Version"] == sesemi.__version__
    assert Version(meta["Version"]) >= Version("1.0.0") > Version(PYPI_SESEMI)
    assert meta["Author"] and meta["License"] == "Apache-2.0" and meta["Requires-Python"] == ">=3.10"
    assert {"semi-supervised learning", "pytorch-lightning", "hydra", "optuna"} <= set(meta["Keywords"].split(","))
    classifiers = meta.get_all("Classifier")
    assert "Intended Audience :: Science/Research" in classifiers
    assert "Topic :: Scientific/Engineering :: Artificial Intelligence" in classifiers
    assert all(c.count(" :: ") >= 1 for c in classifiers)
