"""sesemi.cluster.environment: the strategy and plugins of a run, for where its process is (a laptop, SLURM tasks,
submitit's local tasks)."""

from __future__ import annotations

import pytest
from lightning_fabric.plugins.environments import LightningEnvironment, SLURMEnvironment
from omegaconf import OmegaConf
from pytorch_lightning.strategies import DDPStrategy

from sesemi.cluster import environment as launch
from sesemi.errors import ConfigError

SLURM_VARS = (
    "SLURM_NTASKS",
    "SLURM_JOB_NAME",
    "SLURM_JOB_ID",
    "SLURM_NTASKS_PER_NODE",
    "SLURM_NNODES",
    "SLURM_PROCID",
    "SLURM_LOCALID",
    "SLURM_NODEID",
    "SLURM_NODELIST",
    "SUBMITIT_EXECUTOR",
    "SUBMITIT_LOCAL_NTASKS",
    "LOCAL_RANK",
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch):
    for var in SLURM_VARS:
        monkeypatch.delenv(var, raising=False)


def _run(**values):
    return OmegaConf.create({"devices": 1, "num_nodes": 1, "accelerator": "cpu", "strategy": "auto", **values})


def test_strategy_for_a_single_run():
    assert launch.resolve_strategy(_run()) == "auto"
    assert launch.resolve_strategy(_run(devices=2)) == "ddp"  # Lightning starts rank 1 (argv + hydra.run.dir)
    assert launch.resolve_plugins(_run()) == []


def test_strategy_inside_slurm_tasks(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SLURM_NTASKS", "2")
    monkeypatch.setenv("SLURM_NTASKS_PER_NODE", "2")
    monkeypatch.setenv("SLURM_JOB_NAME", "sesemi_x")
    strategy = launch.resolve_strategy(_run(devices=2))
    assert isinstance(strategy, DDPStrategy)
    environment = strategy.cluster_environment
    assert isinstance(environment, SLURMEnvironment) and environment.auto_requeue is False
    with pytest.raises(ConfigError, match=r"run\.devices.*this SLURM job has 2 tasks"):
        launch.resolve_strategy(_run(devices=4))
    with pytest.raises(ConfigError, match=r"run\.strategy"):
        launch.resolve_strategy(_run(devices=2, strategy="ddp_spawn"))


def test_one_process_in_slurm_keeps_lightnings_requeue_off(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SLURM_NTASKS", "1")
    monkeypatch.setenv("SLURM_JOB_NAME", "sesemi_x")
    assert launch.resolve_strategy(_run()) == "auto"
    (plugin,) = launch.resolve_plugins(_run())
    assert isinstance(plugin, SLURMEnvironment) and plugin.auto_requeue is False
    # devices=2 in a one-task allocation: local processes, not SLURM tasks that do not exist.
    strategy = launch.resolve_strategy(_run(devices=2))
    assert isinstance(strategy.cluster_environment, LightningEnvironment)


def test_strategy_inside_submitit_local_tasks(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "local")
    monkeypatch.setenv("SUBMITIT_LOCAL_NTASKS", "2")
    monkeypatch.setenv("SUBMITIT_LOCAL_JOB_ID", "123")
    monkeypatch.setenv("SUBMITIT_LOCAL_GLOBALID", "1")
    monkeypatch.setenv("SUBMITIT_LOCAL_LOCALID", "1")
    strategy = launch.resolve_strategy(_run(devices=2))
    environment = strategy.cluster_environment
    assert isinstance(environment, launch.SubmititEnvironment)
    assert (environment.global_rank(), environment.local_rank(), environment.world_size()) == (1, 1, 2)
    assert environment.creates_processes_externally
    assert environment.main_port == launch.SubmititEnvironment().main_port  # same port in every task
