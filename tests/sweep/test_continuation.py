"""sesemi.sweep.continuation on a real journal study and real run dirs: a lost trial whose training started is
continued as itself (claimed by exactly one process through its run dir's lock), and given up only when its
attempts stop making progress."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import optuna
from optuna.trial import TrialState

from sesemi.compat import optuna as compat
from sesemi.rundir import RunLock
from sesemi.sweep import continuation
from sesemi.sweep import study as study_lib
from sesemi.sweep.heartbeat import Heartbeat
from sesemi.sweep.storage import make_storage


def journal_study(path: Path) -> optuna.Study:
    return optuna.create_study(study_name="s", storage=make_storage(None, path), direction="maximize")


def started_trial(study: optuna.Study, run_dir: Path, step: int | None = None) -> optuna.Trial:
    """A RUNNING trial whose training started: its run dir holds a record (at ``step``) and a checkpoint."""
    study_lib.top_up(study, len(study.get_trials()) + 1)
    trial = study_lib.pop_trial(study)
    trial.suggest_float("x", 0, 1)
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "checkpoints" / "last.ckpt").write_bytes(b"ckpt")
    status = {"state": "running", "attempts": [{}], "progress": {"step": step}}
    (run_dir / "status.json").write_text(json.dumps(status))
    trial.set_user_attr(study_lib.RUN_DIR, str(run_dir))
    return trial


def test_a_stopped_trial_is_lost_at_once_and_continued_from_its_checkpoint(tmp_path: Path):
    study = journal_study(tmp_path)
    trial = started_trial(study, tmp_path / "trial_0000", step=7)
    trial_id = compat.trial_id(trial)
    with Heartbeat(study, [trial_id], interval=60):
        assert continuation.lost(study, grace_period=30) == []  # alive
    continuation.stopped(study, trial_id, "SIGTERM at step 7 (scancel)", at_once=True)
    (lost,) = continuation.lost(study, grace_period=30)
    assert lost.number == 0 and lost.state == TrialState.RUNNING and lost.user_attrs["sesemi:stopped"].startswith("SIG")
    assert continuation.resume_overrides(lost) == [f"run.resume={tmp_path / 'trial_0000'}"]
    lock = continuation.claim(study, lost, grace_period=30)
    assert lock is not None and continuation.lost(study, grace_period=30) == []  # taken: its heartbeat is fresh
    lock.release()


def test_a_requeued_trial_waits_for_its_job_within_the_grace_period(tmp_path: Path):
    study = journal_study(tmp_path)
    trial = started_trial(study, tmp_path / "trial_0000")
    continuation.stopped(study, compat.trial_id(trial), "USR2 (time limit); submitit requeues the job", at_once=False)
    assert continuation.lost(study, grace_period=30) == []


def _claim_in_another_process(run_dir: str, held: multiprocessing.Event, done: multiprocessing.Event) -> None:
    lock = RunLock(run_dir)
    assert lock.acquire()
    held.set()
    done.wait(30)


def test_only_one_process_can_claim_a_lost_trial(tmp_path: Path):
    study = journal_study(tmp_path)
    run_dir = tmp_path / "trial_0000"
    trial = started_trial(study, run_dir)
    continuation.stopped(study, compat.trial_id(trial), "killed", at_once=True)
    held, done = multiprocessing.Event(), multiprocessing.Event()
    other = multiprocessing.get_context("fork").Process(target=_claim_in_another_process, args=(run_dir, held, done))
    other.start()
    try:
        assert held.wait(30)
        (lost,) = continuation.lost(study, grace_period=30)
        assert continuation.claim(study, lost, grace_period=30) is None  # another process holds the run dir
    finally:
        done.set()
        other.join(30)
    # Its holder gone (a dead process releases it, whatever killed it), the trial can be claimed.
    lock = continuation.claim(study, continuation.lost(study, grace_period=30)[0], grace_period=30)
    assert lock is not None
    lock.release()


def test_attempts_count_against_max_retries_only_without_progress(tmp_path: Path):
    study = journal_study(tmp_path)
    run_dir = tmp_path / "trial_0000"
    trial = started_trial(study, run_dir, step=0)

    def attempt_at(step: int | None) -> bool:
        status = json.loads((run_dir / "status.json").read_text())
        status["progress"] = {"step": step}
        (run_dir / "status.json").write_text(json.dumps(status))
        return continuation.begin_attempt(study, compat.frozen(study, compat.trial_id(trial)), "w0", max_retries=1)

    # Preempted twenty times, each time further on: never given up.
    assert all(attempt_at(step) for step in range(0, 100, 5))
    # Stuck: attempts 2 and 3 start where the one before did (max_retries=1 allows one repeat).
    assert attempt_at(100) and attempt_at(100)
    assert not attempt_at(100)
    frozen = compat.frozen(study, compat.trial_id(trial))
    assert frozen.state == TrialState.FAIL and "without progress (stuck at step 100)" in frozen.user_attrs["error"]
    assert json.loads((run_dir / "status.json").read_text())["state"] == "failed"
