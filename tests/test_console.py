"""The training app's console: why a run stopped, its last lines, and the library messages it drops."""

from __future__ import annotations

import logging

from omegaconf import DictConfig, OmegaConf

from sesemi.console import final_lines, quiet_library_noise, stop_reason


def trainer_cfg(**trainer) -> DictConfig:
    return OmegaConf.create({"run": {"seed": 0}, "trainer": {"max_steps": 300, **trainer}, "callbacks": {}})


def test_stop_reason_names_the_limit_that_ended_the_fit():
    assert stop_reason(trainer_cfg(), 300) == "max_steps at step 300 of 300"
    assert stop_reason(trainer_cfg(max_time="00:00:10:00"), 151) == "max_time (00:00:10:00) at step 151 of 300"
    assert stop_reason(trainer_cfg(fast_dev_run=True), 1) == "fast_dev_run at step 1"
    early = trainer_cfg()
    early.callbacks.stop = {"_target_": "pytorch_lightning.callbacks.EarlyStopping"}
    assert stop_reason(early, 120) == "early stopping at step 120 of 300"


def test_final_lines_say_what_the_result_why_it_stopped_and_where():
    metrics = {
        "mode": "fit",
        "objective": {"name": "val/acc", "mode": "max", "value": 0.98},
        "global_step": 300,
        "wall_time_s": 107.4,
        "run_dir": "/x/runs/default/20261201_120000",
    }
    choices = {"method": "fixmatch", "data": "digits", "model": "small_cnn", "experiment": None}
    assert final_lines(trainer_cfg(), metrics, choices).splitlines() == [
        "sesemi: trained method=fixmatch data=digits model=small_cnn, seed 0, in 1m47s",
        "sesemi: done. val/acc = 0.9800 (best, max)",
        "sesemi: stopped by max_steps at step 300 of 300",
        "sesemi: run dir /x/runs/default/20261201_120000",
    ]


def test_lightning_adverts_are_dropped_and_other_messages_kept(caplog):
    quiet_library_noise()
    logger = logging.getLogger("pytorch_lightning.utilities.rank_zero")
    with caplog.at_level(logging.INFO, logger=logger.name):
        logger.info("💡 Tip: For seamless cloud logging and experiment tracking, try installing [litlogger]")
        logger.info("TPU available: False, using: 0 TPU cores")
        logger.info("GPU available: False, used: False")
    assert [r.getMessage() for r in caplog.records] == ["GPU available: False, used: False"]
