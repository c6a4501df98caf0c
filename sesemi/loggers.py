"""sesemi's loggers: Lightning's TensorBoard, MLflow and Weights & Biases loggers, one logger run per run dir.

- Every logger gets the run's whole config as hyperparameters, flattened to Hydra's dotted keys (``optimizer.lr``,
  the keys a command line overrides): the training module saves :func:`flat_config` as its hyperparameters, which
  Lightning logs to each logger at the start of fit, validate and test.
- TensorBoard writes its event files into the run dir itself, so ``tensorboard --logdir runs`` names each run
  ``<run.id>/<timestamp>`` (``.../<job>`` in a multirun), with an ordered CUSTOM SCALARS layout and the config in
  HPARAMS next to the objective.
- MLflow and W&B keep the id of their run in the run dir (:data:`LOGGER_RUNS`); a requeued SLURM job or a
  ``run.resume`` of the run continues that same run. Every logger logs at the global step, so the steps of a
  continued run go on where they stopped.

mlflow and wandb are optional (``pip install 'sesemi[mlflow]'``, ``'sesemi[wandb]'``) and imported only when
their logger is chosen (``logger=mlflow``, ``logger=[tensorboard,wandb]``).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from pytorch_lightning.loggers import Logger
from pytorch_lightning.loggers import TensorBoardLogger as _LightningTensorBoardLogger
from pytorch_lightning.loggers.logger import rank_zero_experiment
from pytorch_lightning.utilities import rank_zero_only

from sesemi.errors import ConfigError
from sesemi.rundir import write_json

# The ids of the MLflow and W&B runs a run dir logs to, written when each logger run is created.
LOGGER_RUNS = "loggers.json"

# TensorBoard's SCALARS and TIME SERIES tabs sort card groups by name (``lr`` before ``train``); its CUSTOM SCALARS
# tab shows this layout in this order instead: loss and accuracy first, one chart per quantity with a line per
# head or class. Each tag is a regular expression that TensorBoard matches at the START of a tag (``re.match``).
LAYOUT = {
    "1. loss and accuracy": {
        "loss": ["Multiline", [r"^train/loss$", r"^val/loss$"]],
        "accuracy": ["Multiline", [r"^val/acc$", r"^test/acc$"]],
        "loss per head": ["Multiline", [r"^train/loss_"]],
        "validation accuracy per class": ["Multiline", [r"^val_class_acc/"]],
    },
    "2. pseudo-labels": {
        "precision (used and right / used)": ["Multiline", [r"^train/.*/pl_precision$"]],
        "recall (used and right / all)": ["Multiline", [r"^train/.*/pl_recall$"]],
        "mask ratio (share used)": ["Multiline", [r"^train/.*/mask_ratio$"]],
        "precision per class": ["Multiline", [r"^[^/]+_pl_precision/"]],
        "recall per class": ["Multiline", [r"^[^/]+_pl_recall/"]],
        "class thresholds (FreeMatch, FlexMatch)": ["Multiline", [r"^[^/]+_threshold/"]],
    },
    "3. optimisation": {"learning rate": ["Multiline", [r"^lr/"]]},
}

Scalar = bool | int | float | str


def _scalar(value: Any) -> Scalar:
    """A config value as a hyperparameter every logger takes: numbers, bools and strings as they are, None as
    ``null``, lists (and anything else) as their JSON text, e.g. ``["val/acc", "train/loss"]``."""
    if isinstance(value, (bool, int, float, str)):
        return value
    return json.dumps(value, default=str)


def flat_config(config: Mapping[str, Any], prefix: str = "") -> dict[str, Scalar]:
    """``{"optimizer": {"lr": 0.03}}`` as ``{"optimizer.lr": 0.03}``: the keys a Hydra command line overrides."""
    flat: dict[str, Scalar] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flat_config(value, f"{name}."))
        else:
            flat[name] = _scalar(value)
    return flat


def _require(package: str, key: str) -> None:
    if find_spec(package) is None:
        raise ConfigError(
            key, f"needs the {package} package, which is not installed", f"pip install 'sesemi[{package}]'"
        )


def _logger_runs(run_dir: str | os.PathLike) -> dict[str, Any]:
    try:
        return json.loads((Path(run_dir) / LOGGER_RUNS).read_text())
    except (OSError, ValueError):
        return {}


def kept_run(run_dir: str | os.PathLike, logger: str) -> dict[str, Any]:
    """What :func:`keep_run` stored for ``logger`` in the run dir (empty: this run dir has no such logger run yet)."""
    return _logger_runs(run_dir).get(logger) or {}


def keep_run(run_dir: str | os.PathLike, logger: str, run: Mapping[str, Any]) -> None:
    """Store the id (and where it lives) of ``logger``'s run in the run dir (written atomically), for the restarts
    of the run."""
    runs = _logger_runs(run_dir)
    runs[logger] = dict(run)
    write_json(Path(run_dir) / LOGGER_RUNS, runs)


def run_name(run_dir: str | os.PathLike, parent_dir: str | os.PathLike) -> str:
    """A run's name in MLflow and W&B: its run dir below ``parent_dir`` (``${run.dir}/${run.id}``), i.e.
    ``<timestamp>``, ``<timestamp>/<job>`` or ``<sweep>/trial_0003``; the run dir's own name when it is elsewhere."""
    run_dir, parent = Path(run_dir).absolute(), Path(parent_dir).absolute()
    return run_dir.relative_to(parent).as_posix() if run_dir.is_relative_to(parent) else run_dir.name


class TensorBoardLogger(_LightningTensorBoardLogger):
    """Lightning's TensorBoard logger with :data:`LAYOUT` as the CUSTOM SCALARS dashboard, the run's config in
    HPARAMS with ``objective`` (``run.objective``) as its metric, and without the ``epoch`` card Lightning adds to
    every log (sesemi's runs are counted in steps; ``epoch_card=True`` keeps it for epoch-based runs).

    ``name=""`` writes the event files into ``save_dir`` (the run dir) itself; a run dir that an earlier sesemi
    gave a ``tensorboard/`` event dir keeps it, so a resumed old run stays one TensorBoard run.
    """

    def __init__(
        self, save_dir: str, *args: Any, name: str = "", objective: str = "val/acc", epoch_card: bool = False, **kwargs
    ) -> None:
        if not name and any((Path(save_dir) / "tensorboard").glob("events.out.tfevents.*")):
            name = "tensorboard"
        super().__init__(save_dir, *args, name=name, **kwargs)
        self.objective = objective
        self.epoch_card = epoch_card
        self._layout_written = False
        self._hparams_written = False

    @rank_zero_only
    def log_hyperparams(self, params: Any, metrics: Mapping[str, Any] | None = None, step: int | None = None) -> None:
        """``hparams.yaml`` (Lightning), and once per attempt TensorBoard's HPARAMS summaries: ``params`` with the
        objective as the metric. The metric's values are the objective's own scalars; a placeholder value would be
        a point on its curve, so none is logged here."""
        super().log_hyperparams(params, metrics, step)
        if self._hparams_written:
            return
        from torch.utils.tensorboard.summary import hparams

        experiment, session_start, _ = hparams(flat_config(dict(params)), {self.objective: 0.0})
        for summary in (experiment, session_start):
            self.experiment.file_writer.add_summary(summary)
        self._hparams_written = True

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        if not self._layout_written:
            self.experiment.add_custom_scalars(LAYOUT)
            self._layout_written = True
        if not self.epoch_card:
            metrics = {k: v for k, v in metrics.items() if k != "epoch"}
        super().log_metrics(metrics, step)


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
    """MLflow, one MLflow run per run dir: its id is kept in the run dir (:data:`LOGGER_RUNS`) with the absolute
    tracking URI, and a requeued or resumed run logs on into that run (its status RUNNING again).

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
        _require("mlflow", "logger.mlflow")
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


class WandbLogger(Logger):
    """Weights & Biases, one W&B run per run dir: its id is kept in the run dir (:data:`LOGGER_RUNS`) and a
    requeued or resumed run resumes it (``resume="allow"``). In offline mode (``WANDB_MODE=offline``) each attempt
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
        _require("wandb", "logger.wandb")
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
