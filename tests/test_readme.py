"""Every `python -m sesemi.train` command the README and docs/methods.md show, run as shown (on tiny settings),
plus TensorBoard. (docs/cluster.md and docs/sweeps.md commands are run by the cluster and sweep tests.)"""

from __future__ import annotations

import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import run_cli, run_dirs

from sesemi.datasets import Digits

ROOT = Path(__file__).parents[1]
DOCS = [ROOT / "README.md", ROOT / "docs" / "methods.md"]
EXAMPLE = Path(__file__).parent / "workspace_example"
FMNIST = Path("/usr/share/datasets/fashion-mnist")
# Values in the docs' commands that do not fit a 6-step test model, and what the test runs instead.
TEST_VALUES = {
    "trainer.max_steps=1200": "trainer.max_steps=12",
    "trainer.max_steps=300": "trainer.max_steps=6",
    "threshold=0.9": "threshold=0.0",
}


def readme_commands() -> list[str]:
    blocks = [b for doc in DOCS for b in re.findall(r"```bash\n(.*?)```", doc.read_text(), flags=re.S)]
    return [line.strip() for block in blocks for line in block.splitlines() if line.startswith("python -m sesemi.")]


def test_readme_shows_the_commands_this_test_runs():
    assert len(readme_commands()) >= 16


@pytest.fixture
def workspace(workdir: Path) -> Path:
    shutil.copytree(EXAMPLE, workdir, dirs_exist_ok=True)
    if FMNIST.is_dir():
        (workdir / "data").mkdir(exist_ok=True)
        (workdir / "data" / "fashion-mnist").symlink_to(FMNIST)
    run_cli([], workdir)  # an earlier run, for the commands that take runs/default/<timestamp>
    photos = workdir / "photos"
    photos.mkdir()
    digits = Digits(split="test")
    for i in range(12):
        digits[i][0].save(photos / f"digit_{i:02d}.png")
    return workdir


def test_every_readme_command_runs(workspace: Path):
    earlier = run_dirs(workspace / "runs" / "default")[0]
    for command in readme_commands():
        if "fmnist" in command and not FMNIST.is_dir():
            continue
        module, *args = shlex.split(command)[2:]
        args = [TEST_VALUES.get(a, a).replace("runs/default/<timestamp>", str(earlier)) for a in args]
        training = module == "sesemi.train"
        proc = run_cli(args, workspace, module=module, fast=training)
        if training and args != ["--cfg", "job"]:
            assert "sesemi: done." in proc.stdout + proc.stderr, command
    assert (workspace / "photos.csv").read_text().count("\n") == 13  # header + one row per image
    assert (workspace / "pseudo" / "pseudo_labels.csv").is_file()
    assert not FMNIST.is_dir() or run_dirs(workspace / "runs" / "fmnist_fixmatch")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_tensorboard_serves_the_runs(workdir: Path):
    run_cli([], workdir)
    port = _free_port()
    tensorboard = Path(sys.executable).with_name("tensorboard")
    server = subprocess.Popen(
        [str(tensorboard), "--logdir", "runs", "--host", "127.0.0.1", "--port", str(port)],
        cwd=workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/data/runs", timeout=5) as response:
                    runs = response.read().decode()
                if "default" in runs:
                    break
            except OSError:
                pass
            assert time.time() < deadline, "tensorboard did not list the run"
            time.sleep(1)
    finally:
        server.terminate()
        server.wait(timeout=30)
