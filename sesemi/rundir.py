"""The run directory's own record: ``status.json`` (running / completed / failed / requeued) and ``metrics.json``.

Only global rank zero writes. A run is ``completed`` only after its metrics were written, so a crashed or killed
run never looks finished; each (re)start of the same run dir is appended to ``status.json``'s ``attempts``.
"""

from __future__ import annotations

import json
import os
import socket
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pytorch_lightning.utilities import rank_zero_only

from sesemi.resolvers import STATUS_FILE

METRICS_FILE = "metrics.json"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def read_status(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    path = Path(run_dir) / STATUS_FILE
    return json.loads(path.read_text()) if path.is_file() else None


class RunRecord:
    """Writes the status and metrics files of one run dir."""

    def __init__(self, run_dir: str | os.PathLike) -> None:
        self.dir = Path(run_dir)
        self.status_path = self.dir / STATUS_FILE
        self.metrics_path = self.dir / METRICS_FILE

    def update(self, **fields: Any) -> None:
        """Merge ``fields`` into ``status.json`` (read, update, atomic replace) and stamp ``updated``."""
        status = read_status(self.dir) or {"attempts": []}
        status.update(fields)
        status["updated"] = _now()
        _write_json(self.status_path, status)

    @rank_zero_only
    def start(self) -> None:
        """Mark the run as running; a run dir that already had a status is a restart (requeue or resume)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        previous = read_status(self.dir)
        attempts = previous["attempts"] if previous else []
        attempts.append(
            {
                "started": _now(),
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
                "previous_state": previous["state"] if previous else None,
            }
        )
        self.update(state="running", attempts=attempts, restarts=len(attempts) - 1, error=None)

    @rank_zero_only
    def complete(self, metrics: dict[str, Any]) -> None:
        _write_json(self.metrics_path, metrics)
        self.update(state="completed", ended=_now())

    @rank_zero_only
    def fail(self, error: BaseException) -> None:
        self.update(
            state="failed",
            ended=_now(),
            error=f"{type(error).__name__}: {error}",
            traceback="".join(traceback.format_exception(error))[-8000:],
        )

    @rank_zero_only
    def requeued(self, reason: str) -> None:
        self.update(state="requeued", requeue_reason=reason)
