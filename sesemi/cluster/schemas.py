"""The schemas of ``hydra/launcher=slurm|slurm_cpu|local``: hydra-submitit-launcher's plus sesemi's keys.

Imports hydra-submitit-launcher (the ``cluster`` extra); :mod:`sesemi.cluster.launcher` imports this module only
when the extra is installed, so that the base install's plugin discovery stays silent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hydra.core.config_store import ConfigStore

from sesemi.compat.hydra_submitit import BaseQueueConf, LocalQueueConf, SlurmQueueConf


@dataclass
class _SesemiKeys:
    # Resources that follow run.* are untyped here: `run.devices=auto` must reach sesemi's check (a clear error),
    # not fail as an int conversion inside Hydra.
    nodes: Any = 1
    tasks_per_node: Any = 1
    gpus_per_node: Any = None
    # null (not {}): `hydra.launcher.additional_parameters={mail-type:END}` replaces it instead of merging into a
    # struct dict that has no such key.
    name: Any = None  # null: named after the sweep (run.id or the Optuna study) and its job numbers
    # Relative paths are below the sweep dir (${hydra.sweep.dir} here would claim a second sweep dir).
    submitit_folder: str = ".submitit/%j"
    dry_run: bool = False  # print what would be submitted, submit nothing
    wait: bool = True  # false: submit, write jobs.json, print how to follow the jobs, exit
    snapshot: bool = True  # jobs run the code and configs of submission time (sesemi.cluster.snapshot)
    # Several sweep points per job, one process each (sesemi.cluster.packing); untyped so that a bad value reaches
    # sesemi's check (one error line naming the key).
    points_per_job: Any = 1
    point_gpus: Any = "split"  # split: process i sees the job's GPU i mod G; shared: each sees all of them
    point_threads: Any = None  # torch/OpenMP threads per point; null: the job's CPUs // points_per_job


@dataclass
class SesemiSlurmQueueConf(_SesemiKeys, SlurmQueueConf):
    """hydra-submitit-launcher's ``submitit_slurm`` schema plus sesemi's keys."""

    _target_: str = "hydra_plugins.sesemi_plugins.SlurmLauncher"
    profile: str = "gpu"  # gpu | cpu: which resources this profile may request (checked before submission)
    additional_parameters: Any = None


@dataclass
class SesemiLocalQueueConf(_SesemiKeys, LocalQueueConf):
    _target_: str = "hydra_plugins.sesemi_plugins.LocalLauncher"
    profile: str = "local"


def register() -> None:
    store = ConfigStore.instance()
    store.store(group="hydra/launcher", name="sesemi_submitit_slurm", node=SesemiSlurmQueueConf, provider="sesemi")
    store.store(group="hydra/launcher", name="sesemi_submitit_local", node=SesemiLocalQueueConf, provider="sesemi")


# submitit's executor-independent parameters (the others get the executor's prefix, e.g. slurm_partition).
BASE_KEYS = frozenset(BaseQueueConf.__dataclass_fields__)
