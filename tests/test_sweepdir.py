"""sesemi.sweepdir: trial and worker dir names, jobs.json (entries merged by job number, the job ids a point ran as
kept), the other records written whole, an empty sweep dir removed."""

from __future__ import annotations

from pathlib import Path

from sesemi.rundir import STATUS_FILE
from sesemi.sweepdir import SweepDir, trial_number, trial_subdir, worker_subdir


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


def test_trial_and_worker_dirs_are_named_and_read_back_here():
    assert trial_subdir(7) == "trial_0007" and trial_number(Path("/s") / trial_subdir(12345)) == 12345
    assert trial_number("/s/3") is None and trial_number("/s/trial_x") is None
    assert worker_subdir("20260101_120000-1", 2) == "workers/20260101_120000-1/w2"


def test_jobs_of_several_launches_merge_by_number_and_keep_their_first_submission(tmp_path: Path):
    sweep = SweepDir(tmp_path / "sweep")
    assert not sweep.is_sweep() and sweep.jobs() == [] and sweep.read_jobs() is None
    sweep.path.mkdir()
    first = {"num": 1, "job_id": "7_1", "run_dir": str(sweep / "1")}
    sweep.record_jobs([first], executor="local", profile="local")
    submitted = sweep.jobs()[0]["submitted"]
    sweep.record_jobs([{"num": 0, "job_id": "7_0", "run_dir": str(sweep / "0")}], executor="local", profile="local")
    sweep.record_jobs([{**first, "job_state": "COMPLETED"}], executor="local", profile="local")  # at its end
    data = sweep.read_jobs()
    assert [j["num"] for j in data["jobs"]] == [0, 1] and data["jobs"][1]["job_state"] == "COMPLETED"
    assert data["jobs"][1]["submitted"] == submitted and data["sweep_dir"] == str(sweep.path)
    assert data["launch_dir"] == str(Path.cwd()) and sweep.is_sweep()
    (sweep / "trial_0003").mkdir()
    (sweep / "trial_0003" / STATUS_FILE).write_text("{}")  # a trial a worker ran: in no entry
    (sweep / "1").mkdir()
    (sweep / "1" / STATUS_FILE).write_text("{}")
    assert sweep.unlisted_run_dirs(STATUS_FILE) == [sweep / "trial_0003"]


def test_the_records_of_a_sweep_are_written_whole(tmp_path: Path):
    sweep = SweepDir(tmp_path)
    sweep.write_sweep({"study_name": "s", "storage": None})
    assert sweep.read_sweep() == {"study_name": "s", "storage": None}
    assert sweep.write_results("best: 1\n").read_text() == "best: 1\n"
    csv, md = sweep.write_summary("| a |\n", "a\n")
    assert (csv.name, md.name, csv.read_text(), md.read_text()) == ("summary.csv", "summary.md", "a\n", "| a |\n")
    assert sweep.write_grouped("| g |\n").read_text() == "| g |\n"
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_sweep_dir_with_nothing_but_hydras_file_is_removed_up_to_the_launch_dir(tmp_path: Path):
    empty = SweepDir(tmp_path / "runs" / "scan" / "20260101_120000")
    empty.path.mkdir(parents=True)
    (empty / "multirun.yaml").write_text("{}")
    (tmp_path / "runs" / "other").mkdir()
    empty.discard_if_empty(stop=tmp_path)
    assert not (tmp_path / "runs" / "scan").exists() and (tmp_path / "runs" / "other").is_dir()  # others stay
    kept = SweepDir(tmp_path / "kept")
    kept.path.mkdir()
    (kept / "jobs.json").write_text("{}")
    kept.discard_if_empty(stop=tmp_path)
    assert kept.is_sweep()
