"""The Hydra and submitit internals the cluster launchers use (sesemi/compat/) still exist upstream.

Each fails loudly, naming what moved, instead of a sweep failing at submission (or, worse, inside a job).
"""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from sesemi.compat import hydra as hydra_compat
from sesemi.compat import submitit as submitit_compat


def test_hydra_launcher_api():
    from hydra.core.utils import JobReturn, JobStatus

    for name in hydra_compat.__all__:
        assert getattr(hydra_compat, name) is not None, name
    failed = JobReturn(overrides=[], status=JobStatus.FAILED)
    failed.return_value = ValueError("boom")
    assert isinstance(hydra_compat.job_error(failed), ValueError)
    from hydra.core.config_loader import ConfigLoader

    assert "load_sweep_config" in ConfigLoader.__abstractmethods__
    assert {"hydra_context", "task_function", "config", "job_dir_key", "job_subdir_key", "configure_logging"} <= set(
        inspect.signature(hydra_compat.run_job).parameters
    )


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
