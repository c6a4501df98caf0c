"""sesemi.sweepdir's jobs.json: entries merged by job number, the job ids a point ran as kept."""

from __future__ import annotations

from pathlib import Path

from sesemi.sweepdir import SweepDir


def test_a_point_run_again_as_another_job_keeps_the_ids_it_ran_as(tmp_path: Path):
    sweep = SweepDir(tmp_path)
    entry = {"num": 1, "job_id": "144_1", "run_dir": str(tmp_path / "trial_0001"), "overrides": []}
    sweep.record_jobs([entry, {**entry, "num": 0, "job_id": "144_0"}], executor="slurm", profile="slurm_cpu")
    sweep.record_jobs([entry], executor="slurm", profile="slurm_cpu")  # the same job, recorded again at its end
    assert "previous_job_ids" not in sweep.jobs()[1]
    # A synchronous sweep's next batch continues trial 1 as a job of its own: the point's entry is that job now.
    sweep.record_jobs([{**entry, "job_id": "146"}], executor="slurm", profile="slurm_cpu")
    sweep.record_jobs([{**entry, "job_id": "150"}], executor="slurm", profile="slurm_cpu")
    first, again = sweep.jobs()
    assert first["job_id"] == "144_0" and "previous_job_ids" not in first
    assert again["job_id"] == "150" and again["previous_job_ids"] == ["144_1", "146"]
    assert again["submitted"] == sweep.jobs()[1]["submitted"]  # the point's first submission
