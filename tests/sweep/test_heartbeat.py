"""sesemi.sweep.heartbeat: a trial's heartbeat in its study (a user attribute), written at once and then every
``interval`` seconds from a thread while the ``with`` block runs; a trial that ended is dropped, not an error."""

from __future__ import annotations

import time
from pathlib import Path

import optuna

from sesemi.compat import optuna as compat
from sesemi.sweep import storage as storage_lib
from sesemi.sweep import study as study_lib
from sesemi.sweep.heartbeat import Heartbeat


def test_a_running_trials_heartbeat_is_kept_fresh_and_an_ended_one_dropped(tmp_path: Path):
    study = optuna.create_study(study_name="s", storage=storage_lib.make_storage(None, tmp_path))
    study_lib.top_up(study, 2)
    running, ended = study_lib.pop_trial(study), study_lib.pop_trial(study)
    study.tell(ended, 1.0)
    ids = [compat.trial_id(running), compat.trial_id(ended)]
    with Heartbeat(study, ids, interval=0.2) as heartbeat:
        first = study.trials[0].user_attrs[study_lib.HEARTBEAT]
        assert heartbeat.trial_ids == [ids[0]]  # the ended trial is no longer beaten for
        time.sleep(1.0)
        assert study.trials[0].user_attrs[study_lib.HEARTBEAT] > first
        assert study_lib.heartbeat_age(study.trials[0]) < 1.0
    stopped = study.trials[0].user_attrs[study_lib.HEARTBEAT]
    time.sleep(0.5)
    assert study.trials[0].user_attrs[study_lib.HEARTBEAT] == stopped  # the thread ended with the block
    assert study_lib.HEARTBEAT not in study.trials[1].user_attrs
