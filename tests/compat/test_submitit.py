"""The submitit internals the cluster launchers use (sesemi/compat/submitit.py) still exist upstream (their Hydra
internals: tests/compat/test_hydra.py).

Each fails loudly, naming what moved, instead of a sweep failing at submission (or, worse, inside a job).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sesemi.compat import submitit as submitit_compat


def test_submitit_internals(tmp_path: Path):
    submitit = pytest.importorskip("submitit")
    import signal

    from sesemi.cluster.job import submitit_signal

    assert submitit.JobEnvironment._usr_sig() == submitit_signal() == signal.SIGUSR2  # sesemi reads it the same way
    executor = submitit.AutoExecutor(folder=str(tmp_path), cluster="slurm")
    executor.update_parameters(slurm_partition="debug", timeout_min=5)
    submitit_compat.start_jobs_with(executor, "sesemi.cluster.job")
    script = submitit_compat.sbatch_script(executor, 3)
    assert "#SBATCH --array=0-2" in script and "#SBATCH --partition=debug" in script
    assert f"-u -m sesemi.cluster.job -u -m submitit.core._submit {tmp_path}" in script  # the job starts in sesemi
    job = submitit.LocalJob(folder=tmp_path, job_id="1", tasks=(0, 1))
    assert submitit_compat.job_paths(job).stdout.name == "1_0_log.out"
