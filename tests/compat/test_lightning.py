"""The Lightning internals sesemi relies on (sesemi/compat/lightning.py) are still where it expects them.

If one of these fails after a Lightning upgrade, the named internal moved: update sesemi/compat/lightning.py.
"""

from __future__ import annotations

import inspect
import os

import torch
from lightning_fabric.utilities import seed as fabric_seed
from pytorch_lightning import Trainer, seed_everything

from sesemi.compat import lightning as compat


def test_seed_everything_still_announces_worker_seeding_in_the_environment(monkeypatch):
    monkeypatch.delenv(compat.SEED_WORKERS_ENV, raising=False)
    seed_everything(0, workers=True, verbose=False)
    assert os.environ.get(compat.SEED_WORKERS_ENV) == "1", "Lightning no longer sets PL_SEED_WORKERS"
    seed_everything(0, workers=False, verbose=False)
    assert os.environ.get(compat.SEED_WORKERS_ENV) == "0"


def test_lightnings_worker_seeding_function_is_still_there_and_seeds_torch(monkeypatch):
    params = inspect.signature(fabric_seed.pl_worker_init_function).parameters
    assert list(params)[:2] == ["worker_id", "rank"], "pl_worker_init_function's signature changed"
    monkeypatch.setenv(compat.SEED_WORKERS_ENV, "1")
    torch.manual_seed(1000)
    compat.seed_worker(3)
    after = torch.initial_seed()
    torch.manual_seed(1000)
    assert after != torch.initial_seed(), "seed_worker no longer reseeds the worker"


def test_the_logger_connector_still_says_when_logs_are_written():
    trainer = Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False, log_every_n_steps=5)
    connector = getattr(trainer, "_logger_connector", None)
    assert connector is not None, "Trainer._logger_connector is gone"
    assert hasattr(type(connector), "should_update_logs"), "_LoggerConnector.should_update_logs is gone"
    assert isinstance(compat.should_update_logs(trainer), bool)
