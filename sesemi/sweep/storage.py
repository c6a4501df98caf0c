"""Where a study lives: a journal file next to the trials (default) or a database for many nodes.

A storage *spec* is the string a user writes in ``hydra.sweeper.storage``:

- ``null`` (default): the journal file ``<sweep dir>/optuna.journal``. Optuna's journal storage appends one line per
  change under a lock file, so concurrent workers on several nodes of a shared filesystem (NFS, Lustre, GPFS) can use
  it; no server to run.
- ``<path>.journal`` or ``journal:<path>``: a journal file somewhere else (relative paths: to the launch directory).
- an SQLAlchemy URL (``postgresql://user@host:5432/db``, ``mysql+pymysql://...``, ``sqlite:///file.db``): an RDB
  storage. The password stays out of the URL (the sweeper refuses a URL that holds one): it is taken from
  ``$SESEMI_STORAGE_PASSWORD`` (or, for PostgreSQL, from libpq's own ``$PGPASSWORD`` / ``~/.pgpass``) when the
  process connects, so it is never written into a run dir, a log or a job pickle. A refused connection is one
  :class:`~sesemi.errors.ConfigError` naming the variable.

``${sesemi.optuna_storage:<spec>}`` turns a spec into a storage object, for Hydra's own ``hydra/sweeper=optuna``
(whose ``storage`` is handed to Optuna unchanged).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from sesemi.sweepdir import SweepDir

log = logging.getLogger(__name__)

PASSWORD_ENV = "SESEMI_STORAGE_PASSWORD"
_RDB_SCHEMES = ("postgresql", "postgres", "mysql", "sqlite", "oracle", "mssql", "mariadb", "cockroachdb")


def is_rdb(spec: str | None) -> bool:
    return bool(spec) and "://" in str(spec) and str(spec).split("://")[0].split("+")[0] in _RDB_SCHEMES


def journal_path(spec: str | None, sweep_dir: str | os.PathLike | None) -> Path | None:
    """The journal file a spec stands for, or None for an RDB URL."""
    if spec in (None, "", "journal"):
        if sweep_dir is None:
            raise ValueError("a journal storage without a path needs the sweep dir")
        return SweepDir(Path(sweep_dir).absolute()).journal
    spec = str(spec)
    if spec.startswith("journal:"):
        spec = spec[len("journal:") :]
        spec = spec.removeprefix("//")
        return Path(os.path.expanduser(spec)).absolute()
    if is_rdb(spec):
        return None
    if "://" in spec:
        raise ValueError(
            f"unsupported storage {mask(spec)!r}: use a journal file path (*.journal) or an SQLAlchemy database URL"
        )
    return Path(os.path.expanduser(spec)).absolute()


def _postgres_driver() -> str:
    """SQLAlchemy 2.1 maps ``postgresql://`` to psycopg 3; use psycopg2 (the ``sweep`` extra) when that is missing."""
    import importlib.util

    if importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2") is not None:
        return "postgresql+psycopg2"
    return "postgresql"


def _url_with_password(spec: str) -> str:
    """The URL to connect with: the password from the environment, a PostgreSQL driver that is installed."""
    from sqlalchemy.engine import make_url

    url = make_url(spec.replace("postgres://", "postgresql://", 1))
    if url.drivername == "postgresql":
        url = url.set(drivername=_postgres_driver())
    password = os.environ.get(PASSWORD_ENV)
    if url.password is None and password:
        url = url.set(password=password)
    return url.render_as_string(hide_password=False)


def mask(spec: Any) -> str:
    """The spec as it may be shown: a URL's password replaced by ``***``."""
    if spec is None:
        return "journal (default)"
    spec = str(spec)
    if is_rdb(spec):
        try:
            from sqlalchemy.engine import make_url

            return make_url(spec).render_as_string(hide_password=True)
        except Exception:  # noqa: BLE001
            return spec.split("://")[0] + "://***"
    return spec


def is_in_memory(spec: Any) -> bool:
    """An SQLite URL without a file (``sqlite://``, ``sqlite:///:memory:``): a database private to each process."""
    if not is_rdb(spec) or not str(spec).startswith("sqlite"):
        return False
    from sqlalchemy.engine import make_url

    return make_url(str(spec)).database in (None, "", ":memory:")


def has_password(spec: Any) -> bool:
    if not is_rdb(spec):
        return False
    from sqlalchemy.engine import make_url

    return make_url(str(spec)).password is not None


def checked_spec(spec: Any) -> str | None:
    """``hydra.sweeper.storage`` as sesemi's sweeper takes it: a path or URL, and no password in it."""
    from sesemi.errors import ConfigError

    if spec is not None and not isinstance(spec, str):
        raise ConfigError(
            "hydra.sweeper.storage",
            "is an object; sesemi's sweeper takes a journal file path or a database URL",
            "give the path or URL itself (the ${sesemi.optuna_storage:...} resolver is for hydra/sweeper=optuna)",
        )
    if is_in_memory(spec):
        raise ConfigError(
            "hydra.sweeper.storage",
            f"{spec} is an in-memory database: every trial job and worker would open an empty one of its own",
            "leave hydra.sweeper.storage unset (the journal file <sweep dir>/optuna.journal), or give a file "
            "(sqlite:///<path>.db, <path>.journal) or a database server's URL",
        )
    if has_password(spec):
        raise ConfigError(
            "hydra.sweeper.storage",
            f"{mask(spec)} holds a password, which Hydra would write into every trial's .hydra/hydra.yaml",
            f"remove it from the URL and export {PASSWORD_ENV} (or PGPASSWORD for PostgreSQL)",
        )
    return spec


def make_storage(spec: str | None, sweep_dir: str | os.PathLike | None = None) -> Any:
    """An Optuna storage object for a spec (see the module docstring)."""
    import optuna

    if spec is not None and not isinstance(spec, str):
        return spec  # already a storage object
    path = journal_path(spec, sweep_dir)
    if path is None:
        import sqlalchemy.exc

        try:
            return optuna.storages.RDBStorage(_url_with_password(str(spec)), engine_kwargs={"pool_pre_ping": True})
        except sqlalchemy.exc.OperationalError as err:
            raise _connection_error(spec, err) from None
    from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        network = network_filesystem(path.parent)
        if network:
            _say_once_to_use_a_database(path, network)
        # On a network filesystem, the lock Optuna documents for NFSv3 and later (an O_EXCL create) instead of its
        # default symlink lock.
        lock = JournalFileOpenLock(str(path)) if network else None
        return optuna.storages.JournalStorage(JournalFileBackend(str(path), lock_obj=lock))
    except OSError as err:
        raise _unwritable_journal(spec, path, err) from None


_NETWORK_FS = ("nfs", "nfs4", "lustre", "gpfs", "cifs", "smb3", "smbfs", "beegfs", "ceph", "glusterfs", "9p")
_SAID: set[str] = set()


def network_filesystem(path: Path, mounts: str | None = None) -> str | None:
    """The type of the network filesystem ``path`` is on (``nfs4``, ``lustre``...), or None for a local one; from
    the mount table (``mounts``: its text, e.g. ``/proc/mounts``)."""
    if mounts is None:
        try:
            mounts = Path("/proc/mounts").read_text()
        except OSError:
            return None
    target = os.path.realpath(path)
    best, kind = "", ""
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        point = fields[1].replace("\\040", " ")
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) > len(best):
            best, kind = point, fields[2]
    base = kind.split(".")[-1] if kind.startswith("fuse.") else kind
    return kind if base in _NETWORK_FS or kind.startswith("fuse.") else None


def _say_once_to_use_a_database(path: Path, kind: str) -> None:
    if str(path) in _SAID:
        return
    _SAID.add(str(path))
    log.warning(
        "sesemi: the study's journal %s is on a network filesystem (%s): Optuna's journal there has lost writes under "
        "many workers (optuna/optuna#5138). sesemi uses the lock Optuna documents for NFSv3+, but for many workers "
        "on several nodes give the sweep a database: hydra.sweeper.storage=postgresql://<user>@<host>/<db> "
        "(docs/sweeps.md, Storage)",
        path,
        kind,
    )


def _unwritable_journal(spec: str | None, path: Path, err: OSError) -> Exception:
    """The one error line for a journal that cannot be made (a read-only or full filesystem), with a pasteable Fix."""
    from sesemi.errors import ConfigError

    reason = err.strerror or str(err)
    if spec in (None, "", "journal"):  # the default journal, in the sweep dir
        return ConfigError(
            "hydra.sweeper.dir",
            f"the study's journal {path} cannot be written ({reason})",
            f"put the sweep in a writable folder, e.g. hydra.sweeper.dir=runs/sweeps/{path.parent.name}",
        )
    return ConfigError(
        "hydra.sweeper.storage",
        f"the study's journal {path} cannot be written ({reason})",
        "give a journal in a writable folder, or hydra.sweeper.storage=null: the journal in the sweep dir",
    )


def _connection_error(spec: str, err: Exception) -> Exception:
    from sesemi.errors import ConfigError

    reason = str(getattr(err, "orig", None) or err).strip().splitlines()[0]
    if "password" in reason.lower():
        fix = (
            f"export {PASSWORD_ENV}=<the password> (or PGPASSWORD, or a ~/.pgpass entry) in the shell that runs "
            "the sweep; SLURM jobs inherit it"
        )
    else:
        fix = "check that the database server runs and that the URL names the right host, port and database"
    return ConfigError("hydra.sweeper.storage", f"{mask(spec)}: the database refused the connection ({reason})", fix)


def storage_resolver(spec: str | None = None, sweep_dir: str | None = None) -> Any:
    """``${sesemi.optuna_storage:<spec>[,<dir>]}``: a storage object for Hydra's own Optuna sweeper."""
    return make_storage(spec or None, sweep_dir)


def register() -> None:
    """``${sesemi.optuna_storage:...}``, for Hydra's own ``hydra/sweeper=optuna`` (registered by the app's entry)."""
    from omegaconf import OmegaConf

    from sesemi.compat.omegaconf import register_resolver

    if not OmegaConf.has_resolver("sesemi.optuna_storage"):
        register_resolver("sesemi.optuna_storage", storage_resolver)
