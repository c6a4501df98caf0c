"""Every method config trains for a few real steps on the embedded digits through the CLI and logs each head's loss.

All methods are one multirun (``-m method=a,b,...``), as a user compares them: one process start, a run dir per
method, each checked by its own test.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml
from conftest import read_json, run_cli, run_dirs

pytestmark = pytest.mark.slow  # real training runs through the CLI (the fast tier is -m "not slow")

# method config -> the loss heads it must log (CrossEntropyHead is "supervised" everywhere)
METHODS = {
    "supervised": ["supervised"],
    "rotation": ["supervised", "rotation"],
    "fixmatch": ["supervised", "fixmatch"],
    "fixmatch_rotation": ["supervised", "fixmatch", "rotation"],
    "entropy_minimization": ["supervised", "entropy"],
    "pi_model": ["supervised", "pi_model"],
    "mean_teacher": ["supervised", "mean_teacher"],
    "pseudo_label": ["supervised", "pseudo_label"],
    "jigsaw": ["supervised", "jigsaw"],
    "freematch": ["supervised", "freematch"],
    "flexmatch": ["supervised", "flexmatch"],
    "softmatch": ["supervised", "softmatch"],
    "softmatch_rotation": ["supervised", "softmatch", "rotation"],
    "simmatch": ["supervised", "simmatch"],
}


def _runs_by_overrides(root: Path) -> dict[tuple[str, ...], Path]:
    """Each run dir of a multirun below ``root`` by its job's overrides."""
    return {tuple(yaml.safe_load((d / ".hydra" / "overrides.yaml").read_text())): d for d in run_dirs(root)}


@pytest.fixture(scope="module")
def method_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, ...], Path]:
    root = tmp_path_factory.mktemp("methods")
    run_cli(["-m", f"method={','.join(sorted(METHODS))}", "trainer.max_steps=4", "callbacks.images=null"], root)
    return _runs_by_overrides(root)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_method_trains_and_logs_each_head_loss(method: str, method_runs: dict[tuple[str, ...], Path]):
    (run_dir,) = [d for overrides, d in method_runs.items() if f"method={method}" in overrides]
    assert read_json(run_dir / "status.json")["state"] == "completed"
    metrics = read_json(run_dir / "metrics.json")
    assert metrics["global_step"] == 4
    config = yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text())
    assert sorted(config["method"]["loss_heads"]) == sorted(METHODS[method])
    for head in METHODS[method]:
        value = metrics["final"][f"train/loss_{head}"]
        assert math.isfinite(value)
    assert math.isfinite(metrics["final"]["train/loss"])


# the levers against confirmation bias and for a cheap warm-up, each a command-line switch
SWITCHES = {
    "warm-up": ["method=fixmatch", "method.loss_heads.fixmatch.start_step=0.5"],
    "teacher-pseudo-labels": ["method=freematch", "method.loss_heads.freematch.pseudo_labels_from=teacher"],
    "distribution-alignment": ["method=fixmatch", "method.loss_heads.fixmatch.distribution_alignment=true"],
    "softmatch-teacher-no-alignment": [
        "method=softmatch",
        "method.loss_heads.softmatch.pseudo_labels_from=teacher",
        "method.loss_heads.softmatch.distribution_alignment=false",
    ],
    "simmatch-teacher-mixing": [
        "method=simmatch",
        "method.loss_heads.simmatch.pseudo_labels_from=teacher",
        "method.loss_heads.simmatch.aggregation_alpha=0.9",
    ],
    "label-smoothing": ["method.loss_heads.supervised.label_smoothing=0.1"],
    "separate-weak-forward-batched-views": [
        "method=softmatch",
        "method.loss_heads.softmatch.separate_weak_forward=true",
        "augment.weak._target_=sesemi.data.batch_pipeline",
        "augment.strong._target_=sesemi.data.batch_pipeline",
        "data.num_workers=1",
    ],
}


@pytest.mark.parametrize("switch", sorted(SWITCHES))
def test_each_switch_trains_from_the_command_line(switch: str, workdir: Path):
    run_cli(SWITCHES[switch], workdir)  # with the image-grid callback: it sees the warm-up's unloaded stream
    (run_dir,) = run_dirs(workdir)
    assert read_json(run_dir / "status.json")["state"] == "completed"
    metrics = read_json(run_dir / "metrics.json")
    assert metrics["global_step"] == 6
    assert math.isfinite(metrics["final"]["train/loss"])
