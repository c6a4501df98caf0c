"""sesemi's loggers: Lightning's TensorBoard, MLflow and Weights & Biases loggers, one logger run per run dir.

- Every logger gets the run's whole config as hyperparameters, flattened to Hydra's dotted keys (``optimizer.lr``,
  the keys a command line overrides): the training module saves :func:`flat_config` as its hyperparameters, which
  Lightning logs to each logger at the start of fit, validate and test.
- TensorBoard writes its event files into the run dir itself, so ``tensorboard --logdir runs`` names each run
  ``<run.id>/<timestamp>`` (``.../<job>`` in a multirun), with an ordered CUSTOM SCALARS layout and the config in
  HPARAMS next to the objective.
- MLflow and W&B keep the id of their run in the run dir (``loggers.json``, :data:`sesemi.rundir.LOGGERS_FILE`);
  a requeued SLURM job or a ``run.resume`` of the run continues that same run. Every logger logs at the global
  step, so the steps of a continued run go on where they stopped.

mlflow and wandb are optional (``pip install 'sesemi[mlflow]'``, ``'sesemi[wandb]'``) and imported only when
their logger is chosen (``logger=mlflow``, ``logger=[tensorboard,wandb]``).
"""

from sesemi.loggers.mlflow_logger import MLFlowLogger
from sesemi.loggers.runs import flat_config, keep_run, kept_run, run_name
from sesemi.loggers.tensorboard import LAYOUT, TensorBoardLogger
from sesemi.loggers.wandb_logger import WandbLogger

__all__ = [
    "LAYOUT",
    "MLFlowLogger",
    "TensorBoardLogger",
    "WandbLogger",
    "flat_config",
    "keep_run",
    "kept_run",
    "run_name",
]
