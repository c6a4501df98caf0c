"""Weights & Biases, one W&B run per run dir."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pytorch_lightning.loggers import Logger
from pytorch_lightning.loggers.logger import rank_zero_experiment
from pytorch_lightning.utilities import rank_zero_only

from sesemi.loggers.runs import flat_config, keep_run, kept_run, require, run_name


class WandbLogger(Logger):
    """Weights & Biases, one W&B run per run dir: its id is kept in the run dir (:data:`sesemi.rundir.LOGGERS_FILE`)
    and a requeued or resumed run resumes it (``resume="allow"``). In offline mode (``WANDB_MODE=offline``) each attempt
    writes one ``wandb/offline-run-*`` folder with that same run id, which ``wandb sync`` uploads. Metrics are
    logged with ``trainer/global_step``, the charts' x axis (as Lightning's own W&B logger does), so the steps of a
    continued run go on where they stopped.

    A process trains one run at a time: a W&B run still open from an earlier run of this process (the trial before,
    in a sweep that trains its trials in one process) is finished before this one starts. ``init`` (``mode``,
    ``settings``, ``tags``, ``entity``...) goes to ``wandb.init`` as it is.

    W&B writes through a service process of its own (``wandb-core``), which a job's ``SIGTERM`` (``scancel``,
    ``scontrol requeue``, preemption without an early signal) stops together with the training process: what it had
    not written yet is lost (W&B writes its file every 15 s), and this attempt logs no more to W&B (one warning); the
    training goes on to its checkpoint, and the requeued or resumed attempt continues the W&B run from there. A run
    that ends otherwise than by finishing its fit (an error; a signal's checkpoint, before the job is requeued) is
    finished at once by :meth:`finalize`, so W&B has written everything before the job's processes end.
    """

    STEP = "trainer/global_step"

    def __init__(
        self,
        run_dir: str,
        parent_dir: str,
        project: str = "sesemi",
        save_dir: str | None = None,
        **init: Any,
    ) -> None:
        require("wandb", "logger.wandb")
        super().__init__()
        self.run_dir = Path(run_dir)
        kept = kept_run(run_dir, "wandb")
        self._init = {
            **{k: dict(v) if isinstance(v, Mapping) else v for k, v in init.items()},  # config nodes as dicts
            "project": kept.get("project", project),
            "name": run_name(run_dir, parent_dir),
            "id": kept.get("id"),
            "resume": "allow",
            "dir": str(save_dir or run_dir),
        }
        self._run: Any = None
        self._open = True  # False once the W&B run is finished, or W&B's service is gone
        self._finished = False

    @property
    def name(self) -> str:
        return self._init["project"]

    @property
    def version(self) -> str | None:
        return self._run.id if self._run is not None else self._init["id"]

    @property
    def save_dir(self) -> str:
        return self._init["dir"]

    @property
    @rank_zero_experiment
    def experiment(self) -> Any:
        """The ``wandb`` run of this run dir, started (or resumed) on first use."""
        if self._run is None:
            import wandb

            if wandb.run is not None:
                wandb.run.finish()
            self._run = wandb.init(**self._init)
            self._run.define_metric(self.STEP)
            self._run.define_metric("*", step_metric=self.STEP, step_sync=True)
            keep_run(self.run_dir, "wandb", {"id": self._run.id, "project": self._run.project})
        return self._run

    def _send(self, send: Callable[[], Any]) -> None:
        """Hand W&B one update, unless its service process is gone (see above): then warn once and drop the rest."""
        if not self._open:
            return
        try:
            send()
        except ConnectionError as err:
            self._open = False
            logging.getLogger("sesemi").warning(
                "sesemi: W&B's service process stopped (%s: %s), likely by the job's signal; this attempt logs no "
                "more to W&B (a requeued or resumed attempt continues the W&B run)",
                type(err).__name__,
                err,
            )

    @rank_zero_only
    def log_hyperparams(self, params: Any) -> None:
        config = flat_config(dict(params))
        self._send(lambda: self.experiment.config.update(config, allow_val_change=True))

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        row = {**metrics, self.STEP: step} if step is not None else dict(metrics)
        self._send(lambda: self.experiment.log(row))

    @rank_zero_only
    def finalize(self, status: str) -> None:
        """``success`` (a fit or test that ended whole): the W&B run stays open for what follows (the test set's
        evaluation), and is finished when the process ends. ``finished`` (Lightning's word for a job about to be
        requeued) or ``failed`` (an error, or a run stopped by a signal): finished now, W&B writing out all it holds
        before the job's processes end."""
        if status == "success" or self._run is None or self._finished:
            return
        import wandb

        self._finished = True
        self._send(lambda: self._run.finish(exit_code=0 if status == "finished" else 1))
        # W&B's service process ends now rather than at exit, when a requeued job's may be gone already (its exit
        # code, or a connection to a service already gone, is not the run's concern).
        with contextlib.suppress(ConnectionError, SystemExit):
            wandb.teardown()
        self._open = False
