"""The settings of a fast CPU step (channels-last weights, bf16 autocast, batched views, a separate weak forward):
the same network function, and a run with them trains, checkpoints and resumes from the command line."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import compose_config, read_json, run_cli, run_dirs

from sesemi.builders import build_datamodule, build_module

FAST_STEP = [
    "run.channels_last=true",
    "run.precision=bf16-mixed",
    "augment.weak._target_=sesemi.data.batch_pipeline",
    "augment.strong._target_=sesemi.data.batch_pipeline",
    "method.loss_heads.fixmatch.separate_weak_forward=true",
]


def test_channels_last_stores_every_conv_weight_nhwc_and_computes_the_same_function(tmp_path: Path):
    cfg = compose_config(tmp_path, ["run.channels_last=true"])
    datamodule = build_datamodule(cfg)
    datamodule.setup("fit")
    torch.manual_seed(0)
    module = build_module(cfg, datamodule.num_classes)
    torch.manual_seed(0)
    reference = build_module(compose_config(tmp_path), datamodule.num_classes)
    convs = [p for p in module.parameters() if p.ndim == 4]
    assert convs and all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)
    ema = [p for p in module.ema.module.parameters() if p.ndim == 4]
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in ema)
    images = datamodule.sample_batches(4)["eval"]["image"]
    module.eval(), reference.eval()
    assert torch.allclose(module.model(images), reference.model(images), atol=1e-5)


@pytest.mark.slow
def test_a_fast_step_run_trains_and_resumes_with_its_layout_changed(workdir: Path):
    run_cli([*FAST_STEP, "data.num_workers=1", "lr_scheduler=fixmatch_cosine"], workdir)  # more steps still learn
    (run_dir,) = run_dirs(workdir)
    assert read_json(run_dir / "metrics.json")["global_step"] == 6
    run_cli([f"run.resume={run_dir}", "trainer.max_steps=10", "run.channels_last=false"], workdir)
    status = read_json(run_dir / "status.json")
    assert status["state"] == "completed" and status["restarts"] == 1
    assert read_json(run_dir / "metrics.json")["global_step"] == 10
