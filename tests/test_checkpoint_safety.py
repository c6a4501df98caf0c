"""Checkpoints are read without running code from them: a pickled payload is refused, never executed."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import run_cli, run_dirs

from sesemi.checkpoints import load_checkpoint
from sesemi.errors import ConfigError


class Payload:
    """Unpickling this runs ``touch <marker>``: what a malicious checkpoint would do with a worse command."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(str(self.marker))}",)


class Harmless:
    """A trusted checkpoint's non-plain object (e.g. a config class a user saved by mistake)."""


def _malicious_checkpoint(tmp_path: Path) -> tuple[Path, Path]:
    marker = tmp_path / "code_ran"
    path = tmp_path / "downloaded.ckpt"
    torch.save({"state_dict": {}, "sesemi_config": {}, "hyper_parameters": Payload(marker)}, path)
    return path, marker


@pytest.mark.slow
def test_a_real_training_checkpoint_loads(workdir: Path):
    run_cli([], workdir)
    (run_dir,) = run_dirs(workdir / "runs")
    state = load_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    assert {"state_dict", "sesemi_config", "sesemi_classes", "optimizer_states", "loops"} <= set(state)


def test_a_pickled_payload_is_refused_and_does_not_run(tmp_path: Path):
    path, marker = _malicious_checkpoint(tmp_path)
    with pytest.raises(ConfigError, match="could run code") as err:
        load_checkpoint(path, "run.pretrained_checkpoint")
    assert err.value.key == "run.pretrained_checkpoint"
    assert not marker.exists()


def test_the_conversion_the_error_prints_makes_a_trusted_file_loadable(tmp_path: Path):
    path = tmp_path / "trusted.ckpt"
    weights = {"model.head.weight": torch.ones(2, 3)}
    torch.save({"state_dict": weights, "sesemi_config": {"a": 1}, "extra": Harmless()}, path)
    with pytest.raises(ConfigError) as err:
        load_checkpoint(path)
    command = re.search(r'python -c "(.*?)"', err.value.fix).group(1)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), *sys.path])}
    subprocess.run(
        [sys.executable, "-c", f"from {__name__} import Harmless; " + command], cwd=tmp_path, check=True, env=env
    )
    plain = load_checkpoint(tmp_path / "plain.ckpt")
    assert torch.equal(plain["state_dict"]["model.head.weight"], weights["model.head.weight"])
    assert plain["sesemi_config"] == {"a": 1} and "extra" not in plain


@pytest.mark.slow
@pytest.mark.parametrize("key", ["run.pretrained_checkpoint", "run.resume"])
def test_training_from_a_malicious_checkpoint_stops_without_running_it(workdir: Path, key: str):
    path, marker = _malicious_checkpoint(workdir)
    proc = run_cli([f"{key}={path}"], workdir, check=False)
    assert proc.returncode != 0
    assert not marker.exists()
    if key == "run.pretrained_checkpoint":  # sesemi's loader: the one-line error
        assert "sesemi: error: run.pretrained_checkpoint:" in proc.stderr and "could run code" in proc.stderr
    else:  # Lightning's resume: torch.load(weights_only=None), i.e. the restricted unpickler of torch >= 2.6
        assert "Weights only load failed" in proc.stderr


@pytest.mark.slow
def test_predict_refuses_a_malicious_checkpoint(workdir: Path):
    path, marker = _malicious_checkpoint(workdir)
    (workdir / "photos").mkdir()
    proc = run_cli([f"checkpoint={path}", "images=photos"], workdir, fast=False, check=False, module="sesemi.predict")
    assert proc.returncode != 0 and "could run code" in proc.stderr
    assert not marker.exists()
