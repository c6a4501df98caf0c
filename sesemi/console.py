"""What the training app prints: library messages a user cannot act on are dropped, and the last lines of a run.

Each silenced message is matched narrowly (its own text, its own logger) so any other warning still shows.

Where lines go (:func:`split_streams`, on Hydra's job logging of ``configs/train.yaml``): the run's own lines and
Lightning's messages on stdout, with the progress bar, so ``> log.txt`` keeps the whole run; warnings and errors on
stderr, so ``2>`` gets only those; and every line, with time, logger and level, in the run dir's ``train.log``
(warnings too: they are routed through logging).
"""

from __future__ import annotations

import logging
import sys
import warnings
from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig

# Lightning 2.6 builds its metric trees with torch's deprecated ``LeafSpec``; only a Lightning upgrade fixes it.
_PYTREE = r"`isinstance\(treespec, LeafSpec\)` is deprecated"
# sesemi counts and logs in optimizer steps across epochs (``log_every_n_steps`` applies to the global step), so a
# short epoch (the 11 batches of the digits default) loses no logs; Lightning's hint assumes per-epoch logging.
_LOG_INTERVAL = r"The number of training batches \(\d+\) is smaller than the logging interval"
# `debug=overfit` asks for it; Lightning turns the shuffling off itself, and says so as a warning.
_OVERFIT_SHUFFLE = r"You requested to overfit but enabled train dataloader shuffling"
# The EMA copy of the network is kept in eval mode on purpose.
_EVAL_MODE = r"Found \d+ module\(s\) in eval mode at the start of training"
# Lightning's hint on every machine that has srun (login nodes); sesemi's SLURM launcher starts the tasks itself.
_SRUN = r"The `srun` command is available on your system but is not used"
# sesemi's runs are counted in steps across epochs (an epoch is one pass of the smaller loader); a requeued or
# resumed run continues from its step's checkpoint, drawing new random batches, as any epoch does.
_MID_EPOCH = r"You're resuming from a checkpoint that ended before the epoch ended"
# A resumed or requeued run writes its checkpoints where they are: one best.ckpt and one last.ckpt, overwritten.
_CHECKPOINT_DIR = r"Checkpoint directory .* exists and is not empty"

# The records a console handler leaves to the log file: a failure's traceback, which Hydra prints on the console.
FILE_ONLY = {"file_only": True}


class _ConsoleFilter(logging.Filter):
    """A console handler's filter: drops the records meant for the log file only (:data:`FILE_ONLY`), those a
    library's logger prints on the console itself, and, with ``below``, the records at or above that level, which go
    to the other stream."""

    def __init__(self, below: int | None = None) -> None:
        super().__init__()
        self.below = below

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "file_only", False) or _printed_by_its_logger(record):
            return False
        return self.below is None or record.levelno < self.below


def _printed_by_its_logger(record: logging.LogRecord) -> bool:
    """Whether a logger between the record's and the root prints on the console itself: submitit's logger has its
    own stdout and stderr handlers (in every SLURM job), so its records reach the job's console through them and
    ``train.log`` through the root, not the console twice."""
    logger: logging.Logger | None = logging.getLogger(record.name)
    while logger is not None and logger is not logging.root:
        if any(type(h) is logging.StreamHandler for h in logger.handlers):
            return True
        logger = logger.parent if logger.propagate else None
    return False


class _ErrorsHandler(logging.StreamHandler):
    """The console's stderr: warnings and errors."""


def split_streams() -> None:
    """Split the console handler of the job's logging (stdout) in two: records below WARNING stay on stdout with
    the progress bar, WARNING and above go to stderr with the same format; :data:`FILE_ONLY` records reach neither.
    Lightning's loggers, which print on stderr themselves when imported before logging was configured, send their
    records here too (console and ``train.log``). Call once the job's logging is configured; idempotent."""
    root = logging.getLogger()
    consoles = [h for h in root.handlers if type(h) is logging.StreamHandler and h.stream is sys.stdout]
    for console in consoles:
        if not any(isinstance(f, _ConsoleFilter) for f in console.filters):
            console.addFilter(_ConsoleFilter(below=logging.WARNING))
    if consoles and not any(isinstance(h, _ErrorsHandler) for h in root.handlers):
        errors = _ErrorsHandler(sys.stderr)
        errors.setLevel(logging.WARNING)
        errors.setFormatter(consoles[0].formatter)
        errors.addFilter(_ConsoleFilter())
        root.addHandler(errors)
    if not consoles:
        return  # no console of the job's (a DDP rank > 0 of a SLURM job): Lightning keeps printing on stderr
    for name in ("pytorch_lightning", "lightning_fabric"):
        logger = logging.getLogger(name)
        for handler in [h for h in logger.handlers if type(h) is logging.StreamHandler]:
            logger.removeHandler(handler)
        logger.propagate = True


def log_failure(error: BaseException) -> None:
    """Write the error that ended the run, with its traceback, into the run's log file (``train.log``) only: Hydra
    prints it on the console itself."""
    logging.getLogger("sesemi").error(
        "sesemi: failed: %s: %s", type(error).__name__, error, exc_info=error, extra=FILE_ONLY
    )


class _DropMessages(logging.Filter):
    """Drops the records of its logger whose message starts with one of ``drop``."""

    def __init__(self, *drop: str) -> None:
        super().__init__()
        self.drop = drop

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.drop)


# Per logger, the messages dropped:
_DROP = {
    # Lightning's ``💡 Tip: ... try installing litlogger`` adverts; "TPU/HPU available: False" on machines without
    # them; "`Trainer.fit` stopped: `max_steps=...` reached" and "Time limit reached" (the last lines of a run say
    # why it stopped); the loading of the best checkpoint for the test set after training, and of the checkpoint of
    # run.mode=validate/test (the run's lines name it). A resume keeps "Restored all states from the checkpoint".
    "pytorch_lightning.utilities.rank_zero": (
        "💡 Tip:",
        "TPU available: False",
        "HPU available: False",
        "`Trainer.fit` stopped: `max_",
        "Time limit reached.",
        "Restoring states from the checkpoint path at ",
        "Loaded model weights from the checkpoint at ",
    ),
    # A checkpoint written on a signal (sesemi.cluster.signals) has the full training state, as it should.
    "pytorch_lightning.trainer.connectors.checkpoint_connector": ("`weights_only` was not set, defaulting to",),
}


def quiet_library_noise() -> None:
    """Silence the messages above; call once at start-up (the training CLI does)."""
    for message in (_PYTREE, _LOG_INTERVAL, _OVERFIT_SHUFFLE, _EVAL_MODE, _SRUN, _MID_EPOCH, _CHECKPOINT_DIR):
        warnings.filterwarnings("ignore", message=message)
    for name, drop in _DROP.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropMessages) for f in logger.filters):
            logger.addFilter(_DropMessages(*drop))


def setup_console() -> None:
    """The training app's console, once the job's logging is configured: :func:`quiet_library_noise`,
    :func:`split_streams`, and warnings routed through logging (onto stderr, and into ``train.log``)."""
    quiet_library_noise()
    split_streams()
    logging.captureWarnings(True)


def _what(choices: Mapping[str, Any]) -> str:
    picked = [f"{group}={choices[group]}" for group in ("experiment", "method", "data", "model") if choices.get(group)]
    return " ".join(picked) or "the default config"


def stop_reason(cfg: DictConfig, step: int) -> str:
    """Why a fit ended, read from the trainer settings and the step it reached: ``max_steps``, ``max_time``..."""
    trainer = cfg.get("trainer") or {}
    max_steps = int(trainer.get("max_steps") or -1)
    of = f" of {max_steps}" if max_steps > 0 else ""
    if trainer.get("fast_dev_run"):
        reason, of = "fast_dev_run", ""
    elif max_steps > 0 and step >= max_steps:
        reason = "max_steps"
    elif trainer.get("max_time"):
        reason = f"max_time ({trainer.max_time})"
    elif any("EarlyStopping" in str(node.get("_target_")) for node in (cfg.get("callbacks") or {}).values() if node):
        reason = "early stopping"
    elif (trainer.get("max_epochs") or -1) > 0:
        reason = f"max_epochs ({trainer.max_epochs})"
    else:
        reason = "a callback asked to stop"
    return f"{reason} at step {step}{of}"


def result_text(metrics: Mapping[str, Any]) -> str:
    """``val/acc = 0.9800 (best, max)`` and the test accuracy, or the metrics of a validate/test run."""
    if "objective" in metrics:
        obj = metrics["objective"]
        text = f"{obj['name']} = {obj['value']:.4f} (best, {obj['mode']})"
        if "test" in metrics:
            text += ", " + ", ".join(f"{k} = {v:.4f}" for k, v in metrics["test"].items() if k.endswith("acc"))
        return text
    mode = metrics["mode"]
    return ", ".join(f"{k} = {v:.4f}" for k, v in metrics[mode].items())


def final_lines(cfg: DictConfig, metrics: Mapping[str, Any], choices: Mapping[str, Any]) -> str:
    """The last lines of a run: what was trained, the result, why it stopped, and the run dir. The seed and why it
    stopped come from the metrics record (``seed``, ``stopped_by``: written from the config the run trained with,
    a resumed run's own), else from ``cfg``."""
    what = _what(choices)
    lines = []
    if metrics["mode"] == "fit":
        minutes, seconds = divmod(round(float(metrics.get("wall_time_s", 0))), 60)
        seed = metrics.get("seed", cfg.run.seed)
        lines.append(f"sesemi: trained {what}, seed {seed}, in {minutes}m{seconds:02d}s")
        lines.append(f"sesemi: done. {result_text(metrics)}")
        lines.append(f"sesemi: stopped by {metrics.get('stopped_by') or stop_reason(cfg, int(metrics['global_step']))}")
    else:
        lines.append(f"sesemi: {metrics['mode']} of {metrics.get('checkpoint')} ({what})")
        lines.append(f"sesemi: done. {result_text(metrics)}")
    lines.append(f"sesemi: run dir {metrics['run_dir']}")
    return "\n".join(lines)
