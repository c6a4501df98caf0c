"""sesemi.sweep.storage: where a study lives, and the journal on a network filesystem."""

from __future__ import annotations

import logging
from pathlib import Path

import optuna
import pytest

from sesemi.sweep import storage

MOUNTS = """/dev/sda1 / ext4 rw,relatime 0 0
srv:/export/home /home nfs4 rw,vers=4.2 0 0
10.0.0.1@o2ib:/scratch /scratch lustre rw 0 0
tmpfs /tmp tmpfs rw 0 0
x@y:/d /mnt/my\\040drive fuse.sshfs rw 0 0
"""


@pytest.mark.parametrize(
    ("path", "kind"),
    [
        ("/home/me/runs/sweeps/s", "nfs4"),
        ("/scratch/me", "lustre"),
        ("/mnt/my drive/s", "fuse.sshfs"),
        ("/tmp/s", None),
        ("/work/s", None),
        ("/homework/s", None),  # a prefix of a mount point is not inside it
    ],
)
def test_network_filesystems_are_told_from_the_mount_table(path: str, kind: str | None):
    assert storage.network_filesystem(Path(path), MOUNTS) == kind


def test_a_local_journal_keeps_optunas_default_lock_and_says_nothing(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    assert storage.network_filesystem(tmp_path) is None  # this machine's tmp is local
    with caplog.at_level(logging.WARNING):
        study = optuna.create_study(storage=storage.make_storage(None, tmp_path), study_name="s")
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    assert len(study.trials) == 2 and (tmp_path / "optuna.journal").is_file()
    assert "network filesystem" not in caplog.text


def test_storage_specs(tmp_path: Path):
    assert storage.journal_path(None, tmp_path) == tmp_path / "optuna.journal"
    assert storage.journal_path("journal:/x/s.journal", None) == Path("/x/s.journal")
    assert storage.journal_path("shared/s.journal", None) == Path("shared/s.journal").absolute()
    url = "postgresql://sesemi@db:5432/optuna"
    assert storage.is_rdb(url) and storage.journal_path(url, tmp_path) is None
    assert not storage.has_password(url)
    assert "secret" not in storage.mask("postgresql://u:secret@db/o")
    # The password from the environment is put into a PostgreSQL URL where the sweep connects:
    # tests/sweep/test_sweep_postgres.py, on a real server.
    with pytest.raises(ValueError, match="unsupported storage"):
        storage.journal_path("redis://host", None)
