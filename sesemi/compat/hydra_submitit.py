"""hydra-submitit-launcher's launcher schemas, the same on its 1.2.0 (the Hydra 1.3 line) and 1.4 releases.

sesemi's launcher schemas extend these (:mod:`sesemi.cluster.schemas`). hydra-submitit-launcher 1.4 added three
SLURM keys that submitit 1.5 takes and sesemi's ``hydra/launcher=slurm`` sets: ``python`` (the interpreter on the
nodes), ``srun_args`` and ``use_srun``; 1.2.0 lacks them (composing the config would fail on an unknown key), so
:class:`SlurmQueueConf` declares them as 1.4 does. Imported only with the ``cluster`` extra.
"""

from __future__ import annotations

from dataclasses import dataclass

from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf, LocalQueueConf
from hydra_plugins.hydra_submitit_launcher.config import SlurmQueueConf as _SlurmQueueConf


@dataclass
class SlurmQueueConf(_SlurmQueueConf):
    python: str | None = None
    srun_args: list[str] | None = None
    use_srun: bool = True


__all__ = ["BaseQueueConf", "LocalQueueConf", "SlurmQueueConf"]
