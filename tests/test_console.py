"""The training app's console: why a run stopped, its last lines, the library messages it drops, which stream each
line goes to, and train.log; the CLI's under a pipe (stdout and stderr captured apart, as `> log.txt 2> err.txt`)."""

from __future__ import annotations

import logging
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import FAST, read_json, run_cli, run_dirs
from faults import install_slow
from omegaconf import DictConfig, OmegaConf

from sesemi.console import final_lines, log_failure, quiet_library_noise, split_streams, stop_reason


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


def test_split_streams_puts_warnings_on_stderr_and_the_rest_on_stdout(capsys, tmp_path: Path):
    """As Hydra's job logging configures it (a console handler on stdout, a file handler), then split."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    console, file = logging.StreamHandler(sys.stdout), logging.FileHandler(tmp_path / "train.log")
    root.handlers[:] = [console, file]
    root.setLevel(logging.INFO)
    try:
        split_streams()
        split_streams()  # idempotent: one stderr handler
        log = logging.getLogger("sesemi")
        log.info("sesemi: done.")
        log.warning("sesemi: got SIGTERM")
        logging.getLogger("pytorch_lightning").info("GPU available: False, used: False")
        log_failure(RuntimeError("boom"))
    finally:
        file.close()
        root.handlers[:], _ = saved
        root.setLevel(saved[1])
    out, err = capsys.readouterr()
    assert out.splitlines() == ["sesemi: done.", "GPU available: False, used: False"]
    assert err.splitlines() == ["sesemi: got SIGTERM"]
    logged = (tmp_path / "train.log").read_text()
    assert "sesemi: done." in logged and "sesemi: got SIGTERM" in logged and "GPU available" in logged
    assert "sesemi: failed: RuntimeError: boom" in logged  # the traceback: the log file only


def test_a_library_logger_that_prints_itself_is_printed_once(tmp_path: Path):
    """submitit's logger has its own stdout and stderr handlers (every SLURM job's): its warning is on each stream
    once, as submitit formats it, and in train.log; before, the job's console printed it a second time."""
    script = f"""
import logging, sys
root = logging.getLogger()
root.handlers[:] = [logging.StreamHandler(sys.stdout), logging.FileHandler({str(tmp_path / "train.log")!r})]
root.setLevel(logging.INFO)
import submitit  # configures its logger, as in a job
from sesemi.console import split_streams
split_streams()
logging.getLogger("submitit").warning("Caught signal SIGUSR2 on vm: this job is timed-out.")
logging.getLogger("sesemi").warning("sesemi: got SIGUSR2")
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    assert [line.split(" - ")[-1] for line in proc.stderr.splitlines()] == [
        "Caught signal SIGUSR2 on vm: this job is timed-out.",
        "sesemi: got SIGUSR2",
    ]
    assert proc.stdout.count("Caught signal SIGUSR2") == 1 and proc.stderr.startswith("submitit WARNING (")
    assert "Caught signal SIGUSR2" in (tmp_path / "train.log").read_text()


# The piped CLI: the progress bar on (FAST turns it off), and a test set, so that a test bar would show.
PIPED = [a for a in FAST if not a.startswith("callbacks.progress_bar")]
RESULT_LINES = ("sesemi: run dir ", "sesemi: trained ", "sesemi: done. ", "sesemi: stopped by ", "sesemi: run dir ")

# Written into <launch dir>/src/ (run.src_dir): a run that fails at its third step, as a bug in a user's code does.
BOOM_SOURCE = """
from pytorch_lightning.callbacks import Callback


class Boom(Callback):
    def on_train_batch_end(self, trainer, *args):
        if trainer.global_step >= 3:
            raise RuntimeError("boom at step 3")
"""


def _result_lines(text: str) -> list[str]:
    """The run's result lines, in a console's output or in ``train.log`` (whose records start with time, logger
    and level)."""
    lines = (re.sub(r"^\[[^]]*\]\[[^]]*\]\[[A-Z]+\] - ", "", line) for line in text.splitlines())
    return [line for line in lines if line.startswith(RESULT_LINES)]


@pytest.mark.slow
def test_a_piped_run_prints_its_lines_on_stdout_and_keeps_them_in_train_log(workdir: Path):
    proc = run_cli([*PIPED, "data.test=${data.val}"], workdir, fast=False)
    (run_dir,) = run_dirs(workdir / "runs")
    lines = _result_lines(proc.stdout)
    assert [line[:14] for line in lines] == [prefix[:14] for prefix in RESULT_LINES], proc.stdout
    assert lines[0] == lines[-1] == f"sesemi: run dir {run_dir}"
    assert "data: " in proc.stdout and "train: 100%" in proc.stdout
    assert "\r" not in proc.stdout  # piped: lines, not redraws
    for noise in ("Restoring states", "Loaded model weights", "Testing"):  # the test set's evaluation after the fit
        assert noise not in proc.stdout + proc.stderr
    assert "sesemi:" not in proc.stderr and "train:" not in proc.stderr, proc.stderr
    assert _result_lines((run_dir / "train.log").read_text()) == lines  # the whole run, result lines included


@pytest.mark.slow
def test_a_failed_run_leaves_its_traceback_in_train_log(workdir: Path):
    package = workdir / "src" / "sesemi_boom"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(BOOM_SOURCE)
    proc = run_cli(["+callbacks.boom._target_=sesemi_boom.Boom"], workdir, check=False)
    assert proc.returncode == 1, proc.stderr[-3000:]
    (run_dir,) = run_dirs(workdir / "runs")
    logged = (run_dir / "train.log").read_text()
    assert "sesemi: failed: RuntimeError: boom at step 3" in logged
    assert "Traceback (most recent call last)" in logged and 'raise RuntimeError("boom at step 3")' in logged
    assert "RuntimeError: boom at step 3" in proc.stderr and "Traceback" not in proc.stdout
    assert proc.stderr.count("Traceback (most recent call last)") <= 1  # Hydra's, not a second copy


@pytest.mark.slow
def test_a_config_error_is_its_line_on_stderr_and_in_train_log(workdir: Path):
    proc = run_cli(["run.objective=val/nope"], workdir, check=False)
    assert proc.returncode == 2, proc.stderr[-3000:]
    (run_dir,) = run_dirs(workdir / "runs")
    error = next(line for line in proc.stderr.splitlines() if line.startswith("sesemi: error: run.objective"))
    assert error in (run_dir / "train.log").read_text()
    assert "sesemi: error" not in proc.stdout


@pytest.mark.slow
def test_a_signal_checkpoint_and_its_resume_print_no_lightning_warnings(workdir: Path):
    """SIGTERM mid-training (a checkpoint at the end of the step), then run.resume: Lightning's "`weights_only` was
    not set", "module(s) in eval mode", "resuming ... not resumable" and "Checkpoint directory ... is not empty"
    are not printed."""
    cmd = [sys.executable, "-m", "sesemi.train", *PIPED, *install_slow(workdir), "trainer.max_steps=40"]
    proc = subprocess.Popen(cmd, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not list(workdir.glob("runs/*/*/checkpoints/last.ckpt")) and proc.poll() is None:
        assert time.monotonic() < deadline, "no checkpoint"
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 143, err[-3000:]
    (run_dir,) = run_dirs(workdir / "runs")
    assert read_json(run_dir / "status.json")["state"] == "cancelled"
    resumed = run_cli([*PIPED, f"run.resume={run_dir}", "trainer.max_steps=40"], workdir, fast=False)
    printed = out + err + resumed.stdout + resumed.stderr
    for warning in ("weights_only", "eval mode", "not resumable", "ended before the epoch", "exists and is not empty"):
        assert warning not in printed, printed[-4000:]
    assert "sesemi: got SIGTERM" in err and "sesemi: done." in resumed.stdout
