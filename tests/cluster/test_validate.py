"""sesemi.cluster.validate: a job's resources checked against its run config, each problem naming its key."""

from __future__ import annotations

from sesemi.cluster.validate import check_job
from sesemi.errors import ConfigError


def _keys(problems: list[ConfigError]) -> list[str]:
    return [p.key for p in problems]


def test_resource_checks():
    ok = {"tasks_per_node": 2, "nodes": 1, "gpus_per_node": 2}
    run = {"devices": 2, "num_nodes": 1, "accelerator": "auto", "strategy": "auto"}
    assert check_job(ok, run, profile="gpu", executor="slurm") == []
    assert _keys(check_job({**ok, "tasks_per_node": 4}, run, profile="gpu", executor="slurm")) == [
        "hydra.launcher.tasks_per_node"
    ]
    assert _keys(check_job({**ok, "nodes": 2}, run, profile="gpu", executor="slurm")) == ["hydra.launcher.nodes"]
    assert _keys(check_job(ok, {**run, "devices": "auto"}, profile="gpu", executor="slurm")) == ["run.devices"]
    assert _keys(check_job(ok, {**run, "accelerator": "cpu"}, profile="gpu", executor="slurm")) == [
        "hydra.launcher.gpus_per_node"
    ]
    cpu = {"tasks_per_node": 2, "nodes": 1, "gpus_per_node": None}
    assert check_job(cpu, run, profile="cpu", executor="slurm") == []
    assert _keys(check_job({**cpu, "gres": "gpu:1"}, run, profile="cpu", executor="slurm")) == ["hydra.launcher.gres"]
    extra = {**cpu, "additional_parameters": {"gpus-per-node": 1}}
    assert _keys(check_job(extra, run, profile="cpu", executor="slurm")) == [
        "hydra.launcher.additional_parameters.gpus-per-node"
    ]
    assert _keys(check_job(cpu, {**run, "num_nodes": 2}, profile="local", executor="local")) == [
        "hydra.launcher.nodes",
        "run.num_nodes",
    ]
