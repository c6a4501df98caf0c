"""The cost metrics of a real tiny training run: logged at every validation, validation left out of the step time,
the trained parameters counted, the peak memory of this fit (not of the process before it), and a cost usable as
``run.objective``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
from conftest import compose_config

from sesemi.callbacks.cost import peak_rss_mb, reset_peak_rss, trainable_parameters
from sesemi.runtime import Runtime
from sesemi.training import train

COSTS = ("cost/step_time_s", "cost/params", "cost/peak_mem_mb")
STEP_S, VALIDATION_S = 0.05, 1.5


class SlowSteps(pl.Callback):
    """Each training step takes at least STEP_S longer, each validation VALIDATION_S; records what the run logged
    at each validation and what it should have."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []
        self._since = 0.0

    def on_train_start(self, *args: Any) -> None:
        self._since = time.perf_counter()

    def on_train_batch_end(self, *args: Any) -> None:
        time.sleep(STEP_S)

    def on_validation_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        if args[-1] == 0:  # batch_idx: once per validation
            time.sleep(VALIDATION_S)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        logged = {k: float(trainer.callback_metrics[k]) for k in COSTS if k in trainer.callback_metrics}
        rss_mb = int(Path("/proc/self/status").read_text().split("VmRSS:")[1].split()[0]) / 1024
        now, since = time.perf_counter(), self._since
        self._since = now
        expected = {"params": trainable_parameters(pl_module), "rss_mb": rss_mb, "interval_s": now - since}
        self.seen.append({**logged, **expected})


def _allocate_and_free(mb: int) -> None:
    block = torch.ones(mb * 2**18)  # float32: 4 bytes each, written, so resident
    del block


@pytest.mark.slow
def test_costs_are_logged_at_every_validation_and_one_can_be_the_objective(tmp_path: Path):
    _allocate_and_free(400)  # a peak of this process before the run: not the run's
    before_fit = peak_rss_mb()
    cfg = compose_config(tmp_path / "run", ["run.objective=cost/step_time_s", "run.objective_mode=min"])
    probe = SlowSteps()
    metrics = train(cfg, Runtime(callbacks=[probe]))

    assert len(probe.seen) == 2  # FAST: 6 steps, a validation every 3
    for seen in probe.seen:
        # At least the sleep in every step; the 3 steps' time leaves out the validation that ends each interval.
        assert STEP_S <= seen["cost/step_time_s"] <= (seen["interval_s"] - VALIDATION_S) / 3, seen
        assert seen["cost/params"] == seen["params"] > 0
        assert seen["rss_mb"] - 20 <= seen["cost/peak_mem_mb"] < before_fit - 200, (seen, before_fit)
    assert set(COSTS) <= set(metrics["final"])
    assert metrics["objective"] == {
        "name": "cost/step_time_s",
        "mode": "min",
        "value": pytest.approx(min(s["cost/step_time_s"] for s in probe.seen)),
    }


def test_the_peak_resident_set_is_reset_to_the_current_one():
    if not reset_peak_rss():
        pytest.skip("no /proc/self/clear_refs: the peak is the whole process's")
    start = peak_rss_mb()
    _allocate_and_free(300)
    assert peak_rss_mb() >= start + 290
    assert reset_peak_rss()
    assert peak_rss_mb() < start + 100


class CudaPeak(pl.Callback):
    def __init__(self) -> None:
        self.seen: list[tuple[float, float]] = []

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        peak = torch.cuda.max_memory_allocated(pl_module.device) / 2**20
        self.seen.append((float(trainer.callback_metrics["cost/peak_mem_mb"]), peak))


@pytest.mark.slow
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU")
def test_on_a_gpu_the_peak_is_the_cuda_allocators_since_the_fit_started(tmp_path: Path):
    block = torch.ones(2**28, device="cuda")  # 1 GiB before the run: not the run's
    del block
    probe = CudaPeak()
    train(compose_config(tmp_path / "run", ["run.accelerator=gpu"]), Runtime(callbacks=[probe]))
    assert len(probe.seen) == 2
    for logged, peak in probe.seen:
        assert 0 < logged <= peak < 1024
