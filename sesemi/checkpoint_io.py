"""Checkpoints written whole or not at all: a run killed, or a disk that fills up, mid-write never leaves a torn
``last.ckpt``/``best.ckpt`` where the previous good one was.

Lightning's ``TorchCheckpointIO`` serialises into memory and then writes the target file in place, so a failure
during the write truncates the previous checkpoint. :class:`AtomicCheckpointIO` writes to a temporary file in the
same directory (same filesystem, so the rename is atomic), flushes it to disk and ``os.replace``-s it over the
target. On any failure the temporary file is removed, the previous checkpoint is untouched and the error propagates:
the run is then marked ``failed`` with the reason (:meth:`sesemi.rundir.RunRecord.fail`) and exits non-zero.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO


class AtomicCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if "://" in str(path):  # a remote filesystem (fsspec): Lightning's own way
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        if storage_options is not None:
            raise TypeError(f"storage_options are not supported by {type(self).__name__}")
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except BaseException as err:
            Path(tmp).unlink(missing_ok=True)
            write_error = _os_error(err)
            if write_error is not None and write_error is not err:
                raise write_error from err  # the reason (e.g. "No space left on device"), not torch's "unexpected pos"
            raise


def _os_error(err: BaseException | None) -> OSError | None:
    """The OSError behind ``err``: torch's zip writer reports a failed write as a RuntimeError raised while handling
    the file's OSError."""
    while err is not None and not isinstance(err, OSError):
        err = err.__cause__ or err.__context__
    return err
