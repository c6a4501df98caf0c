"""Every `python -m sesemi.train` command the README and docs/methods.md show, run as shown (on tiny settings),
plus TensorBoard. (docs/cluster.md and docs/sweeps.md commands are run by the cluster and sweep tests.)"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import sys
import termios
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import FAST, read_json, run_cli, run_dirs
from faults import install_slow

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


def readme_console() -> list[str]:
    """The README's pasted console output of a default run."""
    match = re.search(r"A default run prints.*?```text\n(.*?)```", DOCS[0].read_text(), flags=re.S)
    assert match, "the README shows a default run's console output"
    return match.group(1).strip("\n").splitlines()


def on_screen(output: str) -> list[str]:
    """What a terminal shows of captured output: the last carriage-return frame of each line, blank lines dropped."""
    lines = (line.rsplit("\r", 1)[-1].rstrip() for line in output.split("\n"))
    return [line for line in lines if line.strip()]


def shape(line: str) -> str:
    """A console line without what changes from run to run: numbers (and the padding tqdm gives them), the run dir's
    location, the bar's fill."""
    line = re.sub(r"\S*/runs/", "<dir>/runs/", line)
    line = re.sub(r"\|[^|]*\|", "|<bar>|", line)
    return re.sub(r" *\d+(\.\d+)?", " N", line)


def readme_commands() -> list[str]:
    blocks = [b for doc in DOCS for b in re.findall(r"```bash\n(.*?)```", doc.read_text(), flags=re.S)]
    return [line.strip() for block in blocks for line in block.splitlines() if line.startswith("python -m sesemi.")]


def test_readme_shows_the_commands_this_test_runs():
    assert len(readme_commands()) >= 16


def needs_fashion_mnist(command: str) -> bool:
    return "fmnist" in command


@pytest.fixture
def workspace(workdir: Path) -> Path:
    shutil.copytree(EXAMPLE, workdir, dirs_exist_ok=True)
    run_cli([], workdir)  # an earlier run, for the commands that take runs/default/<timestamp>
    photos = workdir / "photos"
    photos.mkdir()
    digits = Digits(split="test")
    for i in range(12):
        digits[i][0].save(photos / f"digit_{i:02d}.png")
    return workdir


def run_readme_command(command: str, workspace: Path, earlier: Path | None = None) -> None:
    module, *args = shlex.split(command)[2:]
    args = [TEST_VALUES.get(a, a) for a in args]
    if earlier is not None:
        args = [a.replace("runs/default/<timestamp>", str(earlier)) for a in args]
    training = module == "sesemi.train"
    proc = run_cli(args, workspace, module=module, fast=training)
    if training and args != ["--cfg", "job"]:
        assert "sesemi: done." in proc.stdout + proc.stderr, command


def stopped_run(workspace: Path) -> Path:
    """A default run cancelled (SIGTERM) after its first validation, as the README's ``run.resume`` continues one:
    its ``best.ckpt`` and ``last.ckpt`` are there, steps are left to train."""
    args = [*FAST, "run.id=default", *install_slow(workspace)[:-1], "+callbacks.slow.seconds=1.0"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "sesemi.train", *args],
        cwd=workspace,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 300
    while not list(workspace.glob("runs/default/*/checkpoints/best.ckpt")) and time.time() < deadline:
        assert proc.poll() is None, "the run ended before its first validation"
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 143
    (run_dir,) = [d for d in run_dirs(workspace / "runs" / "default") if (d / "checkpoints" / "best.ckpt").is_file()]
    assert read_json(run_dir / "status.json")["state"] == "cancelled"
    return run_dir


@pytest.mark.slow
def test_every_readme_command_runs(workspace: Path):
    """All but the Fashion-MNIST commands, which test_readme_fashion_mnist_commands_run runs; the run dir they name
    is a stopped run (run.resume continues it; the others read its checkpoints)."""
    shutil.rmtree(workspace / "runs" / "default")
    earlier = stopped_run(workspace)
    for command in readme_commands():
        if not needs_fashion_mnist(command):
            run_readme_command(command, workspace, earlier)
    assert (workspace / "photos.csv").read_text().count("\n") == 13  # header + one row per image
    assert (workspace / "pseudo" / "pseudo_labels.csv").is_file()


@pytest.mark.slow
def test_readme_fashion_mnist_commands_run(workdir: Path):
    """Skipped, with the reason in pytest's summary, where the dataset is not installed (setup_dev.sh installs it)."""
    commands = [c for c in readme_commands() if needs_fashion_mnist(c)]
    assert commands, "the README shows Fashion-MNIST commands"
    if not FMNIST.is_dir():
        pytest.skip(
            f"Fashion-MNIST is not installed at {FMNIST}, so {len(commands)} README command(s) did not run; "
            "install it with `apt-get install dataset-fashion-mnist` (scripts/setup_dev.sh does, as root)"
        )
    (workdir / "data").mkdir()
    (workdir / "data" / "fashion-mnist").symlink_to(FMNIST)
    for command in commands:
        run_readme_command(command, workdir)
    assert run_dirs(workdir / "runs" / "fmnist_fixmatch")


def run_in_a_terminal(args: list[str], cwd: Path, timeout: float = 900) -> str:
    """Run ``args`` with a 120x40 pseudo-terminal as stdin/stdout/stderr, as a user's shell does; returns what it
    wrote (the progress bar redraws its line with carriage returns there, as it does on a screen)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    proc = subprocess.Popen(args, cwd=cwd, stdin=slave, stdout=slave, stderr=slave, close_fds=True)
    os.close(slave)
    chunks = []
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    assert proc.wait(timeout=60) == 0, b"".join(chunks).decode(errors="replace")[-4000:]
    text = b"".join(chunks).decode(errors="replace").replace("\r\n", "\n")
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)


@pytest.mark.slow
def test_readme_console_output_is_what_a_default_run_prints(workdir: Path):
    """Line for line, the README's pasted output has the shape of what a real run shows in a terminal (a shorter run:
    same lines, other numbers), and neither shows a warning."""
    output = run_in_a_terminal(
        [sys.executable, "-m", "sesemi.train", "trainer.max_steps=20", "trainer.val_check_interval=10"], workdir
    )
    real, pasted = on_screen(output), readme_console()
    assert [shape(line) for line in real] == [shape(line) for line in pasted], "\n".join(real)
    for line in real + pasted:
        assert "warn" not in line.lower(), line
    assert pasted[-1].startswith("sesemi: run dir ") and "sesemi: done. val/acc = " in "\n".join(pasted)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
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


def _config_lines(text: str) -> list[str]:
    """A YAML file's settings: no blank lines or comments (``# @package`` kept: it is a setting), no line ends."""
    lines = [line.split(" #")[0].rstrip() for line in text.splitlines()]
    return [line for line in lines if line.strip() and (not line.lstrip().startswith("#") or "@package" in line)]


def test_the_readme_config_files_are_the_tested_ones():
    """Each YAML file the README shows (its first line names it: ``# configs/...``) is the file of that name in
    tests/workspace_example, which tests/test_workspace.py trains with."""
    blocks = re.findall(r"```yaml\n# (configs/\S+)\n(.*?)```", DOCS[0].read_text(), flags=re.S)
    assert {path for path, _ in blocks} >= {"configs/my_experiment.yaml", "configs/experiment/three_digits.yaml"}
    for path, body in blocks:
        assert _config_lines(body) == _config_lines((EXAMPLE / path).read_text()), path


def test_the_readme_bad_input_example_is_what_the_cli_prints(workdir: Path):
    quoted = re.search(r"`(sesemi: error: data\.labels_per_class: [^`]*)`", DOCS[0].read_text())
    assert quoted, "the README quotes a bad-input error"
    shown = " ".join(quoted.group(1).split())
    proc = run_cli(["data.labels_per_class=1000"], workdir, fast=False, check=False)
    assert proc.returncode == 2
    (line,) = [line for line in proc.stderr.splitlines() if line.startswith("sesemi: error:")]
    assert line == shown
