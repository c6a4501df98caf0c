"""The run dir's record around one job, kept out of the training pipeline (as lightning-hydra-template's
``task_wrapper`` keeps logging and failure handling out of its task).

:func:`recorded_run` is the context the pipeline of :func:`sesemi.training.train` runs in:

- a new run (or a requeued SLURM job restarting in its own dir) is marked ``running`` at once, with a new attempt;
- a resumed run (``run.resume`` into its own dir) is checked first: not running elsewhere (an exclusive lock on the
  run dir, :class:`~sesemi.rundir.RunLock`), its own saved config with only the changes a continuation may make.
  Nothing in its dir changes until the pipeline calls :meth:`RecordedRun.accept` with the built module: the
  checkpoint loaded into it and every check passed; only then is the attempt recorded and the held log released;
- :meth:`RecordedRun.start_step` is the step training continues at (the checkpoint's, read once; the pipeline hands
  it to the TensorBoard logger), and refuses a resume with no step left before anything is built;
- an error marks the run ``failed`` with its traceback (a refused resume leaves the run it points at as it was);
  a signal's :class:`~sesemi.runtime.RunStopped` passes through (the signal handler recorded its state);
- :meth:`RecordedRun.complete` writes ``metrics.json``, then marks the run ``completed``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lightning_utilities.core.rank_zero import rank_zero_only
from omegaconf import DictConfig

from sesemi import resume, rundir
from sesemi.errors import ConfigError
from sesemi.runtime import RunStopped, Runtime

log = logging.getLogger("sesemi")


class RecordedRun:
    """What the pipeline needs from the record: the config to train and where training continues from."""

    def __init__(self, cfg: DictConfig, runtime: Runtime) -> None:
        self.run_dir = Path(cfg.run.output_dir)
        self.record = rundir.RunRecord(self.run_dir)
        self.lock = rundir.RunLock(self.run_dir)
        self.restart = runtime.restart_checkpoint  # a requeued SLURM job continues from its own checkpoint
        self.resumed = resume.resumed_run_dir(cfg) is not None
        self.changed: dict[str, Any] = {}
        self.cfg = cfg
        self.recording = False
        self._state: dict[str, Any] | None = None  # the checkpoint training continues from, read once

    @property
    def resume_from(self) -> str | None:
        """The checkpoint training continues from: the restart point of a requeued job, else ``run.resume``."""
        if self.restart:
            return self.restart
        path = self.cfg.run.get("resume")
        return str(rundir.resolve_checkpoint(path, "run.resume", rundir.RESUME)) if path else None

    def start_step(self) -> int | None:
        """The step training continues at: the ``global_step`` of the checkpoint it continues from (a resume, a
        requeued job's restart, a sweep trial's continuation), None when the run starts from scratch. A resume
        with no step left to train is refused here, before anything is built or changed."""
        if self.resume_from is None:
            return None
        if self._state is None:
            self._state = resume.read_checkpoint(self.resume_from)
        step = int(self._state.get("global_step", 0))
        if self.resumed:
            resume.check_steps_left(step, self.cfg.trainer.get("max_steps"), self.resume_from)
        return step

    def begin(self) -> None:
        if self.resumed:
            resume.check_not_running(self.run_dir)  # names the live run; the lock below closes the race
            self._lock()
            self.cfg, self.changed = resume.continued_config(self.cfg, self.run_dir)
            return
        self._lock()
        self.record.start()
        self.recording = True
        if self.restart:
            self.record.note_attempt(resumed_from=self.restart)
            log.info("sesemi: requeued job resumes from %s", self.restart)

    def _lock(self) -> None:
        if getattr(rank_zero_only, "rank", 0) != 0:
            return  # the ranks of one attempt: rank 0 holds the run dir for all of them
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if not self.lock.acquire():
            holder = _lock_holder(self.lock.path)
            if holder is not None:
                who = f"pid {holder} on this host"
            else:  # another host's (a shared filesystem): the last attempt the record names
                attempt = ((rundir.read_status(self.run_dir) or {}).get("attempts") or [{}])[-1]
                who = f"last recorded: pid {attempt.get('pid')} on {attempt.get('host')}"
            raise ConfigError(
                "run.resume" if self.resumed else "run.output_dir",
                f"{self.run_dir} is in use by another process now ({who}): a run dir trains one attempt at a time",
                "wait for it to end or stop it (kill -TERM <pid> saves a checkpoint), then resume",
            )

    def accept(self, module: Any, max_steps: int) -> None:
        """A resume's checkpoint fits the built module: from now on the run dir is this attempt's."""
        state, self._state = self._state, None  # read by start_step; not kept while training
        if not self.resumed:
            return
        resume.check_checkpoint(module, self.resume_from, max_steps, state)
        resume.release_log_files()
        self.record.start()
        self.recording = True
        self.record.note_attempt(resumed_from=self.resume_from, overrides=resume.command_line(), changed=self.changed)

    def complete(self, metrics: dict[str, Any]) -> None:
        self.record.complete(metrics)

    def fail(self, err: BaseException) -> None:
        if self.recording:  # a refused resume leaves the run it points at as it was
            self.record.fail(err)

    def end(self) -> None:
        self.lock.release()


def _lock_holder(path: Path) -> int | None:
    """The pid holding the ``flock`` on ``path``, from Linux's ``/proc/locks`` (None: not found, e.g. held on
    another host of a network filesystem). The record's last attempt may be an older one (a killed run that two
    resumes race for): the lock's holder is the process that has the run dir now."""
    try:
        inode = path.stat().st_ino
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5].rsplit(":", 1)[-1] == str(inode):
            return int(fields[4])
    return None


@contextlib.contextmanager
def recorded_run(cfg: DictConfig, runtime: Runtime) -> Iterator[RecordedRun]:
    run = RecordedRun(cfg, runtime)
    try:
        run.begin()
        yield run
    except RunStopped:
        raise  # a signal stopped it after its checkpoint; its status says requeued, cancelled or interrupted
    except BaseException as err:
        run.fail(err)
        raise
    finally:
        run.end()
