"""Checkpoints written whole or not at all: a run killed, or a disk that fills up, mid-write never leaves a torn
``last.ckpt``/``best.ckpt`` where the previous good one was.

Lightning's ``TorchCheckpointIO`` serialises into memory and then writes the target file in place, so a failure
during the write truncates the previous checkpoint. :class:`AtomicCheckpointIO` writes to a temporary file in the
same directory (same filesystem, so the rename is atomic), flushes it to disk and ``os.replace``-s it over the
target. On any failure the temporary file is removed, the previous checkpoint is untouched and the error propagates:
the run is then marked ``failed`` with the reason (:meth:`sesemi.rundir.RunRecord.fail`) and exits non-zero.

A writer killed outright (``kill -9``, out of memory, power loss) cannot remove its temporary file, a hidden
``.last.ckpt.<random>.tmp`` as large as a checkpoint. The writer holds an exclusive ``flock`` on its temporary file
while it writes, and the kernel drops the lock when the process dies however it dies; every save first removes
the temporary files in its directory that nobody holds a lock on, the leftovers of dead writers, and never the
file of a writer that is still at work (on this host or, where the filesystem shares ``flock`` locks as NFS does,
on another).
"""

from __future__ import annotations

import fcntl
import os
import re
import tempfile
from pathlib import Path
from typing import IO, Any

import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

TEMP_SUFFIX = ".tmp"
_TEMP_NAME = re.compile(r"\..+\.[A-Za-z0-9_]{8}\.tmp")  # tempfile.mkstemp(prefix=".<name>.", suffix=".tmp")


class AtomicCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if "://" in str(path):  # a remote filesystem (fsspec): Lightning's own way
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        if storage_options is not None:
            raise TypeError(f"storage_options are not supported by {type(self).__name__}")
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(target.parent)
        f, tmp = _locked_temp(target)
        try:
            with f:  # the lock goes with the file's closing, after the rename
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


def _locked_temp(target: Path) -> tuple[IO[bytes], str]:
    """A new temporary file beside ``target``, open for writing and locked by this process.

    A cleaner may open a file in the instant between its creation and its locking, find it unlocked and remove it;
    the file is then created afresh, so a writer only ever writes into a file that is still in the directory."""
    while True:
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=TEMP_SUFFIX)
        f = os.fdopen(fd, "wb")
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            if os.stat(tmp).st_ino == os.fstat(fd).st_ino:
                return f, tmp
        except FileNotFoundError:
            pass
        f.close()


def remove_stale_temps(directory: Path) -> list[Path]:
    """Remove the temporary checkpoint files in ``directory`` whose writer is gone (no lock held on them); returns
    them."""
    removed = []
    for path in directory.iterdir():
        if _TEMP_NAME.fullmatch(path.name) and _remove_if_unlocked(path):
            removed.append(path)
    return removed


def _remove_if_unlocked(path: Path) -> bool:
    try:
        fd = os.open(path, os.O_RDWR)  # O_RDWR: NFS emulates flock with POSIX locks, which need a writable fd
    except FileNotFoundError:
        return False  # renamed into place or removed meanwhile
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False  # its writer is at work
    else:
        path.unlink(missing_ok=True)
        return True
    finally:
        os.close(fd)


def _os_error(err: BaseException | None) -> OSError | None:
    """The OSError behind ``err``: torch's zip writer reports a failed write as a RuntimeError raised while handling
    the file's OSError."""
    while err is not None and not isinstance(err, OSError):
        err = err.__cause__ or err.__context__
    return err
