"""sesemi.compat.hydra_submitit: hydra-submitit-launcher's schemas (1.2.0 on the Hydra 1.3 line, 1.4 on the 1.4 line)
with the SLURM keys sesemi's configs set."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf


def test_the_slurm_schema_has_the_keys_sesemis_configs_set():
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    from sesemi.compat.hydra_submitit import SlurmQueueConf

    slurm = OmegaConf.structured(SlurmQueueConf)
    assert (slurm.python, slurm.srun_args, slurm.use_srun) == (None, None, True)
    slurm.srun_args = ["--cpu-bind=none"]
