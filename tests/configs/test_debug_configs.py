"""The `debug` config group (as in Lightning + Hydra templates): each preset composes, and runs through the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import compose_config, read_json, run_cli, run_dirs

CONFIGS = Path(__file__).parents[2] / "configs" / "debug"
PRESETS = ["anomaly", "default", "fdr", "limit", "overfit", "profiler"]


def test_the_debug_group_has_the_expected_presets():
    assert sorted(p.stem for p in CONFIGS.glob("*.yaml")) == PRESETS


@pytest.mark.parametrize("preset", PRESETS)
def test_each_preset_composes(preset: str, tmp_path: Path):
    cfg = compose_config(tmp_path, [f"debug={preset}"])
    assert cfg.run.id == "debug" and cfg.data.num_workers == 0
    expected = {
        "anomaly": ("detect_anomaly", True),
        "fdr": ("fast_dev_run", True),
        "limit": ("limit_val_batches", 2),
        "overfit": ("overfit_batches", 1),
        "profiler": ("profiler", None),
    }.get(preset)
    if expected:
        key, value = expected
        assert key in cfg.trainer and (value is None or cfg.trainer[key] == value)


@pytest.mark.slow
@pytest.mark.parametrize("preset", PRESETS)
def test_each_preset_runs(preset: str, workdir: Path):
    # FAST's max_steps=6 and small batches keep every preset short; the preset's own switches stay on.
    proc = run_cli([f"debug={preset}"], workdir)
    (run_dir,) = run_dirs(workdir / "runs" / "debug")
    assert read_json(run_dir / "status.json")["state"] == "completed"
    metrics = read_json(run_dir / "metrics.json")
    output = proc.stdout + proc.stderr
    if preset == "fdr":
        assert metrics["global_step"] == 1 and "stopped by fast_dev_run at step 1" in output
    else:
        assert metrics["global_step"] == 6
    if preset == "profiler":
        assert "FIT Profiler Report" in (run_dir / "fit-profile.txt").read_text()
    assert "Warning" not in output, output
