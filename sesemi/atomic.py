"""Files written whole or not at all, readable by whoever may read the folder they are in.

Every record sesemi keeps (``status.json``, ``metrics.json``, ``jobs.json``, ``sweep.json``...) is written to a
temporary file next to its target and renamed over it, so a reader in another shell (``sesemi.status``) or a
crash mid-write never sees half a file. Two things a plain ``tempfile.mkstemp`` gets wrong are handled here:

- **permissions**: ``mkstemp`` creates files ``0600``; renamed over the target, every record became unreadable to
  a lab-mate on a shared cluster filesystem. The file gets the mode a plain ``open()`` would give it (``0666``
  less the process's umask).
- **dead writers**: a writer killed between create and rename (``kill -9``, a node lost) leaves its temporary
  file. Its name carries the writer's host and pid (``.<name>.<host>.<pid>.<random>.tmp``), so
  :func:`remove_stale_temps` can delete the ones whose writer is gone, and never a live writer's.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

PathLike = str | os.PathLike


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()
_HOST = socket.gethostname().split(".")[0]


def _prefix(target: Path) -> str:
    return f".{target.name}.{_HOST}.{os.getpid()}."


@contextlib.contextmanager
def replacing(path: PathLike, mode: str = "w") -> Iterator[IO[Any]]:
    """Write ``path`` through a temporary file that replaces it when the block ends without error (removed
    otherwise); ``mode`` is ``"w"`` or ``"wb"``. The data is flushed to disk before the rename."""
    target = Path(path)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=_prefix(target), suffix=".tmp")
    try:
        os.fchmod(fd, _FILE_MODE)
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: PathLike, text: str) -> None:
    with replacing(path) as f:
        f.write(text)


def write_json(path: PathLike, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, default=str) + "\n")


def read_json(path: PathLike) -> Any:
    """A JSON file's content, or None when it is missing or not (yet) valid JSON."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


_TEMP = re.compile(r"^\.(?P<name>.+)\.(?P<host>[^.]+)\.(?P<pid>\d+)\.[^.]+\.tmp$")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


def remove_stale_temps(directory: PathLike) -> list[Path]:
    """Delete the temporary files in ``directory`` whose writer was a process of this host that is gone; returns
    them. Another host's files are left alone (its processes cannot be asked)."""
    removed = []
    for path in Path(directory).glob(".*.tmp"):
        match = _TEMP.match(path.name)
        if match is None or match["host"] != _HOST or _alive(int(match["pid"])):
            continue
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed.append(path)
    return removed
