"""Each kind of bad input gets one clear message naming the key and the fix, a non-zero exit, and no run that
looks finished."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import read_json, run_cli, run_dirs


def _fails(args: list[str], workdir: Path):
    proc = run_cli(args, workdir, check=False)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    for run_dir in run_dirs(workdir):
        assert read_json(run_dir / "status.json")["state"] == "failed"
        assert not (run_dir / "metrics.json").exists()
    return proc


@pytest.mark.parametrize(
    "args, expected",
    [
        (["data=nope"], ["Could not find 'data/nope'", "digits"]),  # lists the available options
        (["trainer.max_stepz=5"], ["max_stepz", "not in struct"]),
    ],
)
def test_config_composition_errors_create_no_run_dir(workdir: Path, args, expected):
    proc = _fails(args, workdir)
    for text in expected:
        assert text in proc.stderr
    assert not (workdir / "runs").exists()


@pytest.mark.parametrize(
    "args, key, fix",
    [
        (["data.labels_per_class=1000"], "data.labels_per_class", "lower data.labels_per_class to at most"),
        (["model.backbone._target_=nopkg.nets.Net"], "model.backbone", "run.src_dir"),
        (["run.accelerator=gpu"], "run.accelerator", "run.accelerator=auto or cpu"),
        (["run.devices=0"], "run.devices", "run.devices=1"),
        (["run.mode=serve"], "run.mode", "run.mode=fit, validate or test"),
        (["run.mode=test"], "run.checkpoint", "run.checkpoint=<path>"),
        (["run.resume=/nowhere/last.ckpt"], "run.resume", ".ckpt file or a run dir"),
        (["run.objective=val/accuracy"], "run.objective", "val/acc"),
        (["data.labels_per_class=null"], "data.unlabeled_batch_size", "method=supervised"),
        (["method=supervised", "+method.loss_heads.fixmatch.threshold=0.9"], "method.loss_heads.fixmatch", "=null"),
        (
            ["data.train._target_=sesemi.datasets.FashionMNIST", "+data.train.root=${datapath:fmnist}"],
            "data.train",
            "dataset-fashion-mnist",
        ),
    ],
)
def test_bad_values_fail_with_key_and_fix_and_a_failed_status(workdir: Path, args, key, fix):
    proc = _fails(args, workdir)
    error_lines = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert len(error_lines) == 1, proc.stderr[-3000:]
    assert key in error_lines[0] and fix in error_lines[0]
    (run_dir,) = run_dirs(workdir)
    assert read_json(run_dir / "status.json")["error"]
