"""sesemi.cluster.schemas: the launcher configs (``hydra/launcher=slurm|slurm_cpu|local``) composed on the real
configs: each launcher's resources follow the run config, every key a user may set is there."""

from __future__ import annotations

from sesemi import compose
from sesemi.cluster import schemas


def launcher_config(*overrides: str):
    return compose(list(overrides), return_hydra_config=True)


def test_the_schemas_are_registered_for_hydras_config_store():
    from hydra.core.config_store import ConfigStore

    schemas.register()
    launchers = ConfigStore.instance().list("hydra/launcher")
    assert {"sesemi_submitit_slurm.yaml", "sesemi_submitit_local.yaml"} <= set(launchers), launchers


def test_slurm_launcher_resources_follow_the_run_config():
    cfg = launcher_config("hydra/launcher=slurm", "run.devices=4", "run.num_nodes=2", "run.id=scan")
    launcher = cfg.hydra.launcher
    assert launcher._target_ == "hydra_plugins.sesemi_plugins.SlurmLauncher"
    assert (launcher.tasks_per_node, launcher.gpus_per_node, launcher.nodes) == (4, 4, 2)
    assert launcher.name is None and launcher.profile == "gpu" and launcher.dry_run is False and launcher.wait is True
    assert launcher.submitit_folder == ".submitit/%j"  # below the sweep dir; no second sweep dir claimed
    for key in (
        "partition",
        "account",
        "qos",
        "constraint",
        "setup",
        "additional_parameters",
        "array_parallelism",
        "cpus_per_task",
        "mem_gb",
        "timeout_min",
        "signal_delay_s",
        "max_num_timeout",
    ):
        assert key in launcher, key


def test_cpu_and_local_profiles():
    cpu = launcher_config("hydra/launcher=slurm_cpu", "run.devices=2").hydra.launcher
    assert cpu.profile == "cpu" and cpu.gpus_per_node is None and cpu.tasks_per_node == 2
    assert cpu._target_ == "hydra_plugins.sesemi_plugins.SlurmLauncher"
    local = launcher_config("hydra/launcher=local", "run.devices=2").hydra.launcher
    assert local._target_ == "hydra_plugins.sesemi_plugins.LocalLauncher" and local.tasks_per_node == 2
