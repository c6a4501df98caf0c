"""Budget schedules (``lr_scheduler=cosine_time`` / ``fixmatch_cosine_time``): the learning rate against the
training time spent (a clock the test drives), steps ending it when they run out first, the time spent carried
across a checkpoint and a resume, the same rate on every DDP rank, and real runs stopped by ``trainer.max_time``
and resumed through the CLI."""

from __future__ import annotations

import io
import itertools
import math
from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from conftest import compose_config, run_cli, run_dirs

from sesemi.runtime import Runtime
from sesemi.schedules import (
    BudgetSchedule,
    budget_seconds,
    cosine_curve,
    cosine_time,
    fixmatch_cosine,
    fixmatch_cosine_time,
)
from sesemi.training import train

LR = 0.1


class Clock:
    """A time source the test moves forward by hand (seconds)."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _schedule(clock: Clock, total_steps: int = 10**6, max_time: str = "00:00:01:40") -> BudgetSchedule:
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=LR)
    return cosine_time(optimizer, total_steps, max_time, clock)


def _step(schedule: BudgetSchedule, clock: Clock, seconds: float) -> float:
    """One optimizer step that took ``seconds``; the learning rate of the next step."""
    clock.now += seconds
    schedule.optimizer.step()
    schedule.step()
    return schedule.optimizer.param_groups[0]["lr"]


def test_budget_seconds_reads_max_time_as_lightning_does():
    assert budget_seconds("00:00:01:40") == 100
    assert budget_seconds({"hours": 1, "minutes": 30}) == 5400
    assert budget_seconds(None) is None


def test_the_rate_follows_the_share_of_the_time_budget_spent():
    clock = Clock(1000.0)
    schedule = _schedule(clock)  # 100 s budget, steps far from running out
    lrs = {}
    for _ in range(20):
        lr = _step(schedule, clock, 7.5)
        lrs[schedule.training_seconds()] = lr
    for seconds, lr in lrs.items():
        assert lr == pytest.approx(LR * cosine_curve(min(seconds / 100, 1)), abs=1e-12), seconds
    assert lrs[52.5] == pytest.approx(0.04607, abs=1e-5)  # about half way: about half the rate
    assert lrs[105.0] == lrs[150.0] == 0.0  # the budget is spent: the end of the decay, and it stays there


def test_steps_end_the_schedule_when_they_run_out_before_the_time():
    clock = Clock()
    schedule = _schedule(clock, total_steps=10)  # 10 steps of 1 s against a 100 s budget
    lrs = [_step(schedule, clock, 1.0) for _ in range(10)]
    assert lrs[4] == pytest.approx(LR * cosine_curve(0.5))  # after 5 of 10 steps, 5 s of 100
    assert lrs[-1] == pytest.approx(0.0, abs=1e-12)


def test_the_time_spent_is_in_the_checkpoint_and_continues_after_a_resume():
    """30 s of training, a checkpoint, a new process 10 minutes later: the schedule continues at 30 s and follows
    the uninterrupted schedule's rates."""
    clock, steady_clock = Clock(0.0), Clock(0.0)
    schedule, steady = _schedule(clock), _schedule(steady_clock)
    for _ in range(3):
        _step(schedule, clock, 10.0)
        _step(steady, steady_clock, 10.0)
    buffer = io.BytesIO()
    torch.save({"optimizer": schedule.optimizer.state_dict(), "scheduler": schedule.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)  # plain values only, as sesemi reads checkpoints
    assert saved["scheduler"]["spent_s"] == 30.0

    later = Clock(600.0)
    resumed = _schedule(later)
    resumed.optimizer.load_state_dict(saved["optimizer"])
    resumed.load_state_dict(saved["scheduler"])
    assert resumed.training_seconds() == 30.0  # not 0 (restarted), not 600 (the gap counted)
    for _ in range(5):
        assert _step(resumed, later, 10.0) == pytest.approx(_step(steady, steady_clock, 10.0), abs=1e-12)
    assert resumed.training_seconds() == steady.training_seconds() == 80.0


def test_fixmatch_cosine_time_ends_near_a_fifth_of_the_rate():
    clock = Clock()
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=LR)
    schedule = fixmatch_cosine_time(optimizer, 10**6, "00:00:00:10", clock=clock)
    lrs = [_step(schedule, clock, 1.0) for _ in range(12)]
    assert lrs[-1] == pytest.approx(LR * math.cos(7 * math.pi / 16)) == pytest.approx(0.0195, abs=1e-4)


def test_a_schedule_without_any_budget_is_refused():
    with pytest.raises(ValueError, match="neither is set"):
        _schedule(Clock(), total_steps=-1, max_time=None)


def _ddp_rank(rank: int, init_file: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    clock = Clock(1000.0 * rank)  # each process has its own clock, started at another time
    schedule = _schedule(clock)
    lrs = [_step(schedule, clock, 10.0 + 5 * rank) for _ in range(4)]  # rank 1 reads its clock later each step
    torch.save(lrs, f"{out}.{rank}")
    dist.destroy_process_group()


@pytest.mark.slow  # two processes that import torch and Lightning
def test_every_ddp_rank_takes_rank_zeros_time(tmp_path: Path):
    out = str(tmp_path / "lrs")
    mp.spawn(_ddp_rank, args=(str(tmp_path / "init"), out), nprocs=2)
    rank0, rank1 = torch.load(f"{out}.0"), torch.load(f"{out}.1")
    assert rank0 == rank1
    assert rank0 == pytest.approx([LR * cosine_curve(s / 100) for s in (10, 20, 30, 40)])


class RecordRates(pl.Callback):
    """The learning rate and the schedule's and Lightning's timer's seconds at each step and at the end."""

    def __init__(self) -> None:
        self.rows: list[tuple[float, float, float]] = []

    def _row(self, trainer: pl.Trainer) -> None:
        schedule = trainer.lr_scheduler_configs[0].scheduler
        timer = next(c for c in trainer.callbacks if isinstance(c, pl.callbacks.Timer))
        lr = trainer.optimizers[0].param_groups[0]["lr"]
        self.rows.append((lr, schedule.training_seconds(), timer.time_elapsed("train")))

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        self._row(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._row(trainer)


@pytest.mark.slow
def test_a_run_stopped_by_max_time_has_ended_its_schedule(tmp_path: Path):
    overrides = ["lr_scheduler=cosine_time", "trainer.max_time=00:00:00:06", "trainer.max_steps=100000"]
    cfg = compose_config(tmp_path / "run", overrides)
    record = RecordRates()
    metrics = train(cfg, Runtime(callbacks=[record]))
    assert metrics["global_step"] < 100000  # the time ran out first
    base = cfg.optimizer.lr
    lrs = [lr for lr, _, _ in record.rows]
    assert all(b <= a for a, b in itertools.pairwise(lrs)), lrs
    lr_at_half = next(lr for lr, _, timer_s in record.rows if timer_s >= 3.0)
    assert 0.2 * base < lr_at_half < 0.8 * base
    last_lr, schedule_s, timer_s = record.rows[-1]
    assert last_lr < 1e-3 * base  # the schedule had ended (or all but) at the step Lightning's timer stopped
    assert timer_s >= 6 and 0 <= schedule_s - timer_s < 3  # counted from a moment before Lightning's timer


def _spent(run_dir: Path) -> tuple[float, float]:
    """The training seconds in last.ckpt: the schedule's and Lightning's timer's."""
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    (timer,) = [state for key, state in checkpoint["callbacks"].items() if key.startswith("Timer")]
    return checkpoint["lr_schedulers"][0]["spent_s"], timer["time_elapsed"]["train"]


@pytest.mark.slow
def test_a_resumed_run_continues_the_time_it_had_spent(workdir: Path):
    budget = ["lr_scheduler=fixmatch_cosine_time", "trainer.max_time=00:00:10:00"]
    run_cli([*budget, "trainer.max_steps=6"], workdir)
    (run_dir,) = run_dirs(workdir)
    first, first_timer = _spent(run_dir)
    run_cli([f"run.resume={run_dir}", "trainer.max_steps=12"], workdir)
    second, second_timer = _spent(run_dir)
    assert 0 <= first - first_timer < 3 and 0 <= second - second_timer < 6  # as Lightning's timer: continued
    assert second - first >= second_timer - first_timer > 0


def test_fixmatch_cosine_schedule_ends_near_a_fifth_of_the_lr():
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.03)
    schedule = fixmatch_cosine(optimizer, total_steps=100)
    factors = []
    for step in range(101):
        if step in (0, 50, 100):
            factors.append(optimizer.param_groups[0]["lr"] / 0.03)
        optimizer.step()
        schedule.step()
    assert factors[0] == 1.0 and 0.19 < factors[2] < 0.2 and factors[0] > factors[1] > factors[2]
