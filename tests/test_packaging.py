"""`pip install .` (a real wheel, not the editable install) finds the built-in configs from any directory."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

from conftest import FAST, read_json, run_dirs

ROOT = Path(__file__).parents[1]


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
