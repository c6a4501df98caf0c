"""MLflow, one MLflow run per run dir."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from pytorch_lightning.loggers import Logger
from pytorch_lightning.loggers.logger import rank_zero_experiment
from pytorch_lightning.utilities import rank_zero_only

from sesemi.loggers.runs import flat_config, keep_run, kept_run, require, run_name

SQLITE = "sqlite:///"


def _absolute_uri(uri: str) -> str:
    """A SQLite tracking URI with a relative path (``sqlite:///runs/mlflow.db``) made absolute, so that every
    restart of the run, from whatever directory, finds the same store, and its folder created; others as given."""
    if not uri.startswith(SQLITE):
        return uri
    path = Path(uri[len(SQLITE) :]).absolute()
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"{SQLITE}{path}"


@contextlib.contextmanager
def _store_lock(uri: str) -> Iterator[None]:
    """One process at a time creates a SQLite store's tables and looks up or creates the experiment (the jobs of a
    grid start together; two creating one store or one experiment would fail). MLflow's and alembic's messages
    about creating the tables are kept off the console."""
    quiet = [logging.getLogger(name) for name in ("alembic", "mlflow.store.db.utils")]
    levels = [lg.level for lg in quiet]
    for lg in quiet:
        lg.setLevel(logging.WARNING)
    lock = None
    if uri.startswith(SQLITE):
        lock = open(f"{uri[len(SQLITE) :]}.lock", "a")  # noqa: SIM115 - held until the block ends
        fcntl.flock(lock, fcntl.LOCK_EX)
    try:
        yield
    finally:
        if lock is not None:
            lock.close()
        for lg, level in zip(quiet, levels):
            lg.setLevel(level)


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class MLFlowLogger(Logger):
    """MLflow, one MLflow run per run dir: its id is kept in the run dir (:data:`sesemi.rundir.LOGGERS_FILE`) with
    the absolute tracking URI, and a requeued or resumed run logs on into that run (its status RUNNING again).

    ``tracking_uri``: a SQLite file (``sqlite:///runs/mlflow.db``, relative to the launch directory), an MLflow
    server (``http://host:5000``), or ``file:///<absolute path>`` (MLflow's file store, which MLflow 3 wants opted
    into with ``MLFLOW_ALLOW_FILE_STORE=true``). The run is named by its run dir below ``parent_dir``, in the experiment
    ``experiment_name``. MLflow keeps a parameter's first value: a resume that changes one (``trainer.max_steps``)
    adds only the keys not logged yet (``status.json`` has each attempt's changes).
    """

    PARAMS_PER_BATCH = 100  # MLflow's limits for one log_batch request
    METRICS_PER_BATCH = 1000
    MAX_PARAM_LENGTH = 500  # what older MLflow servers accept (MLflow 3: 6000)

    def __init__(self, run_dir: str, parent_dir: str, tracking_uri: str, experiment_name: str = "sesemi") -> None:
        require("mlflow", "logger.mlflow")
        super().__init__()
        self.run_dir = Path(run_dir)
        kept = kept_run(run_dir, "mlflow")
        self.tracking_uri = kept.get("tracking_uri") or _absolute_uri(tracking_uri)
        self.experiment_name = experiment_name
        self.run_name = run_name(run_dir, parent_dir)
        self._run_id: str | None = kept.get("run_id")
        self._client: Any = None

    @property
    def name(self) -> str:
        return self.experiment_name

    @property
    def version(self) -> str | None:
        return self._run_id

    @property
    def run_id(self) -> str:
        """The MLflow run's id (the run is created, or continued, on first use)."""
        self.experiment  # noqa: B018 - creates the run
        assert self._run_id is not None
        return self._run_id

    @property
    @rank_zero_experiment
    def experiment(self) -> Any:
        """The ``MlflowClient`` of the tracking URI, with this run dir's MLflow run created or continued."""
        if self._client is None:
            from mlflow import MlflowClient

            with _store_lock(self.tracking_uri):
                client = MlflowClient(self.tracking_uri)
                if self._run_id is None:
                    experiment = client.get_experiment_by_name(self.experiment_name)
                    if experiment is None:
                        experiment_id = client.create_experiment(self.experiment_name)
                    else:
                        experiment_id = experiment.experiment_id
                    self._run_id = client.create_run(experiment_id, run_name=self.run_name).info.run_id
                    keep_run(self.run_dir, "mlflow", {"tracking_uri": self.tracking_uri, "run_id": self._run_id})
                else:
                    client.update_run(self._run_id, status="RUNNING")
            self._client = client
        return self._client

    @rank_zero_only
    def log_hyperparams(self, params: Any) -> None:
        from mlflow.entities import Param

        logged = self.experiment.get_run(self.run_id).data.params
        new = [
            Param(key, str(value)[: self.MAX_PARAM_LENGTH])
            for key, value in flat_config(dict(params)).items()
            if key not in logged
        ]
        for batch in _chunks(new, self.PARAMS_PER_BATCH):
            self.experiment.log_batch(self.run_id, params=batch)

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        values = [Metric(key, float(value), now, step or 0) for key, value in metrics.items()]
        for batch in _chunks(values, self.METRICS_PER_BATCH):
            self.experiment.log_batch(self.run_id, metrics=batch)

    @rank_zero_only
    def finalize(self, status: str) -> None:
        if self._client is not None:
            self._client.set_terminated(self.run_id, "FINISHED" if status in ("success", "finished") else "FAILED")
