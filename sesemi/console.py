"""What the training app prints: library messages a user cannot act on are dropped, and the last lines of a run.

Each silenced message is matched narrowly (its own text, its own logger) so any other warning still shows.
"""

from __future__ import annotations

import logging
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


class _DropLightningNoise(logging.Filter):
    """Lightning's ``💡 Tip: ... try installing litlogger`` adverts, "TPU/HPU available: False" on machines without
    them, and "`Trainer.fit` stopped: `max_steps=...` reached" or "Time limit reached" (the last lines of a run say
    why it stopped)."""

    DROP = (
        "💡 Tip:",
        "TPU available: False",
        "HPU available: False",
        "`Trainer.fit` stopped: `max_",
        "Time limit reached.",
    )

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.DROP)


def quiet_library_noise() -> None:
    """Silence the messages above; call once at start-up (the training CLI does)."""
    warnings.filterwarnings("ignore", message=_PYTREE)
    warnings.filterwarnings("ignore", message=_LOG_INTERVAL)
    warnings.filterwarnings("ignore", message=_OVERFIT_SHUFFLE)
    logger = logging.getLogger("pytorch_lightning.utilities.rank_zero")
    if not any(isinstance(f, _DropLightningNoise) for f in logger.filters):
        logger.addFilter(_DropLightningNoise())


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
    """The last lines of a run: what was trained, the result, why it stopped, and the run dir."""
    what = _what(choices)
    lines = []
    if metrics["mode"] == "fit":
        minutes, seconds = divmod(round(float(metrics.get("wall_time_s", 0))), 60)
        lines.append(f"sesemi: trained {what}, seed {cfg.run.seed}, in {minutes}m{seconds:02d}s")
        lines.append(f"sesemi: done. {result_text(metrics)}")
        lines.append(f"sesemi: stopped by {stop_reason(cfg, int(metrics['global_step']))}")
    else:
        lines.append(f"sesemi: {metrics['mode']} of {metrics.get('checkpoint')} ({what})")
        lines.append(f"sesemi: done. {result_text(metrics)}")
    lines.append(f"sesemi: run dir {metrics['run_dir']}")
    return "\n".join(lines)
