"""sesemi.atomic: files written whole or not at all, with the mode a plain ``open()`` gives them under the process's
umask (not mkstemp's 0600), and temporary files of dead writers removed, never a live writer's."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from sesemi.atomic import read_json, remove_stale_temps, replacing, write_json, write_text

# In a fresh process: the mode is computed from the umask the process starts with.
WRITE_UNDER_UMASK = """
import os, sys
os.umask(int(sys.argv[2], 8))
from sesemi.atomic import write_json
write_json(sys.argv[1], {"a": 1})
"""

# A writer that dies inside the block (as after kill -9): its temporary file stays behind.
DIE_WRITING = """
import os, sys
from sesemi.atomic import replacing
with replacing(sys.argv[1]) as f:
    f.write("half")
    f.flush()
    os._exit(0)
"""


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_a_records_mode_follows_the_umask(tmp_path: Path, umask: int, mode: int):
    path = tmp_path / "status.json"
    subprocess.run([sys.executable, "-c", WRITE_UNDER_UMASK, str(path), oct(umask)], check=True)
    assert stat.S_IMODE(path.stat().st_mode) == mode
    assert read_json(path) == {"a": 1}


def test_a_write_replaces_the_file_whole_and_a_failed_one_leaves_it_as_it_was(tmp_path: Path):
    path = tmp_path / "metrics.json"
    write_json(path, {"step": 1})
    with pytest.raises(RuntimeError), replacing(path) as f:
        f.write('{"step": 2')  # half a file...
        raise RuntimeError("disk full")  # ...never seen
    assert read_json(path) == {"step": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]  # no temporary file left
    with replacing(tmp_path / "blob", "wb") as f:
        f.write(b"\x00\x01")
    assert (tmp_path / "blob").read_bytes() == b"\x00\x01"
    write_text(path, "not json")
    assert read_json(path) is None and read_json(tmp_path / "missing.json") is None


def test_only_the_temporary_files_of_dead_writers_of_this_host_are_removed(tmp_path: Path):
    target = tmp_path / "status.json"
    dead = subprocess.run([sys.executable, "-c", DIE_WRITING, str(target)])
    assert dead.returncode == 0 and not target.exists()
    (left,) = tmp_path.glob(".status.json.*.tmp")  # named after its writer's host and pid
    host = socket.gethostname().split(".")[0]
    elsewhere = tmp_path / f".status.json.otherhost.{os.getpid()}.abc.tmp"  # another host's: cannot be asked
    elsewhere.touch()
    unrelated = tmp_path / ".notes.tmp"
    unrelated.touch()
    with replacing(target) as f:  # a live writer: this process
        f.write("{}")
        (live,) = [p for p in tmp_path.glob(".status.json.*.tmp") if p not in (left, elsewhere)]
        assert f".{host}.{os.getpid()}." in live.name
        assert remove_stale_temps(tmp_path) == [left]
        assert live.exists() and elsewhere.exists() and unrelated.exists()
    assert read_json(target) == {} and remove_stale_temps(tmp_path) == []
