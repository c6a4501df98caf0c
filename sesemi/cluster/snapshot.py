"""Queued jobs run the code they were submitted with: a content-addressed copy of it, taken at submission.

Submission side, once per submission (:func:`take`): the user's ``src/`` (``run.src_dir``), the workspace's
``configs/`` (the launch dir's) and, when sesemi runs from a source tree (an editable install or a checkout), sesemi's
own package are copied to ``<sweep dir>/.code/<digest>/`` as ``src/``, ``configs/`` and ``lib/sesemi/``. The digest is
a SHA-256 over every copied file's path and content: the same code submitted again, by the same sweep or by thousands
of its jobs, is one copy. ``manifest.json`` beside the copies records what was copied (paths, sizes), from where,
when, what was skipped, and for each git repository the copies come from its commit, ``git diff HEAD`` of the copied
paths (``git-<n>.diff``) and its untracked files there.

What is copied: every file below those folders, symlinks followed (a link back into its own ancestors is skipped),
except hidden files and folders (``.git``, ``.ipynb_checkpoints``...), ``__pycache__``, ``*.egg-info``, ``*.pyc`` and
``*.pyo``. A file over :data:`MAX_FILE_BYTES` is not copied (one warning names each: data belongs in the data root);
more than :data:`MAX_FILES` files or :data:`MAX_TOTAL_BYTES` in all is a :class:`~sesemi.errors.ConfigError` before
anything is submitted.

The job's process starts with :func:`python_command` (submitit's ``python`` parameter; see
:func:`job_environment`): ``SESEMI_SNAPSHOT`` names the snapshot and ``PYTHONPATH`` puts its ``lib/`` and ``src/``
ahead of the installed code when the interpreter starts, which is the only moment that decides where ``sesemi``
itself is imported from. Job side, first thing, :func:`enter` puts the snapshot's ``src/`` first on ``sys.path`` and
points the pickled config loader's workspace entry at the snapshot's ``configs/``; :func:`pin_src_dir` makes a
composed config's ``run.src_dir`` name the snapshot's ``src/``, so that the run adds it, not the live one.

Standard library (and :mod:`sesemi.errors`) only at module level: the job process may import this module first.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shlex
import shutil
import site
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sesemi.errors import ConfigError
from sesemi.sweepdir import CODE_DIR as STORE

log = logging.getLogger("sesemi.cluster.snapshot")

MANIFEST = "manifest.json"
ENV = "SESEMI_SNAPSHOT"  # the snapshot a job runs from, set by python_command
MAX_FILE_BYTES = 1 << 20
MAX_TOTAL_BYTES = 64 << 20
MAX_FILES = 10_000
SKIPPED_SUFFIXES = (".pyc", ".pyo")
# The roles of the copies in a snapshot: the user's code, the workspace configs, sesemi's own package.
SRC, CONFIGS, SESEMI = "src", "configs", "lib/sesemi"


@dataclass(frozen=True)
class Snapshot:
    """A snapshot in a sweep dir: ``path`` is ``<sweep dir>/.code/<digest>``; ``roots`` maps each copy in it
    (``src``, ``configs``, ``lib/sesemi``) to the live folder it was copied from."""

    path: Path
    digest: str
    roots: dict[str, Path]
    launch_dir: Path
    reused: bool = field(default=False, compare=False)  # take() found this content already there

    @property
    def src(self) -> Path | None:
        return self.path / SRC if SRC in self.roots else None

    @property
    def configs(self) -> Path | None:
        return self.path / CONFIGS if CONFIGS in self.roots else None

    @property
    def lib(self) -> Path | None:
        """The folder to import ``sesemi`` from (``lib/sesemi`` is the package), when the snapshot holds it."""
        return self.path / "lib" if SESEMI in self.roots else None


# ------------------------------------------------------------------------------------------------ what to copy
@dataclass
class _Found:
    files: dict[str, Path] = field(default_factory=dict)  # path in the snapshot -> live file
    total: int = 0
    skipped: list[dict[str, Any]] = field(default_factory=list)
    links: list[Path] = field(default_factory=list)  # real folders reached through symlinks (for git's pathspecs)

    def add(self, rel: str, path: Path, size: int, root: Path) -> None:
        self.files[rel] = path
        self.total += size
        if len(self.files) > MAX_FILES or self.total > MAX_TOTAL_BYTES:
            raise ConfigError(
                "hydra.launcher.snapshot",
                f"{root} holds more than {MAX_FILES} files or {MAX_TOTAL_BYTES >> 20} MiB to copy into the jobs' code "
                f"snapshot (reached at {path})",
                "keep data and outputs out of it (datasets go in the data root, run.data_root), or submit without "
                "a snapshot: hydra.launcher.snapshot=false",
            )


def _skipped_name(name: str) -> bool:
    return name.startswith(".") or name == "__pycache__" or name.endswith(".egg-info")


def _walk(root: Path, prefix: str, found: _Found) -> None:
    """Add every file below ``root`` to copy as ``<prefix>/<relative path>``, following symlinks."""
    stack = [(root, prefix, (root.resolve(),))]
    while stack:
        folder, rel, ancestors = stack.pop()
        with os.scandir(folder) as entries:
            for entry in entries:
                if _skipped_name(entry.name):
                    continue
                path, target = Path(entry.path), f"{rel}/{entry.name}"
                if entry.is_dir():
                    real = path.resolve()
                    if real in ancestors:
                        found.skipped.append({"path": target, "why": f"a symlink loop (to {real})"})
                        continue
                    if entry.is_symlink():
                        found.links.append(real)
                    stack.append((path, target, (*ancestors, real)))
                elif entry.is_file():
                    if entry.name.endswith(SKIPPED_SUFFIXES):
                        continue
                    size = entry.stat().st_size
                    if size > MAX_FILE_BYTES:
                        found.skipped.append({"path": target, "why": f"over {MAX_FILE_BYTES >> 20} MiB", "size": size})
                    else:
                        found.add(target, path, size, root)
                elif entry.is_symlink():
                    found.skipped.append({"path": target, "why": f"a broken symlink (to {os.readlink(path)})"})


def sesemi_source() -> tuple[Path | None, str]:
    """sesemi's package folder when it runs from a source tree (to be copied), else None; and why."""
    import sesemi

    package = Path(sesemi.__file__).resolve().parent
    paths = sysconfig.get_paths()
    installed = {paths["purelib"], paths["platlib"], *site.getsitepackages(), site.getusersitepackages()}
    if any(package.is_relative_to(Path(p).resolve()) for p in installed):
        return None, f"installed in {package.parent} (not copied: it does not change while jobs wait)"
    return package, "editable install" if _editable() else "a source tree on the import path"


def _editable() -> bool:
    from importlib import metadata

    try:
        direct_url = metadata.distribution("sesemi").read_text("direct_url.json")
    except metadata.PackageNotFoundError:
        return False
    return bool(direct_url and json.loads(direct_url).get("dir_info", {}).get("editable"))


def _roots(src_dir: str | Path | None, launch_dir: Path, with_sesemi: bool | None) -> tuple[dict[str, Path], str]:
    """The live folders to copy, by role; and why sesemi's package is (not) one of them."""
    roots: dict[str, Path] = {}
    if src_dir and (launch_dir / src_dir).is_dir():
        roots[SRC] = (launch_dir / src_dir).absolute()
    if (launch_dir / "configs").is_dir():
        roots[CONFIGS] = launch_dir / "configs"
    package, why = sesemi_source() if with_sesemi is not False else (None, "not asked for")
    if package is not None:
        roots[SESEMI] = package
    return roots, why


# ------------------------------------------------------------------------------------------ submission side
def take(
    sweep_dir: Path,
    src_dir: str | Path | None = "src",
    launch_dir: Path | None = None,
    *,
    with_sesemi: bool | None = None,
) -> Snapshot:
    """Snapshot what a submission's jobs run into ``<sweep_dir>/.code/<digest>`` (or find it there).

    ``src_dir``: ``run.src_dir`` (relative to ``launch_dir``, default the working directory, where the workspace's
    ``configs/`` is too); ``with_sesemi``: copy sesemi's own package (None: when it runs from a source tree).
    Safe to call from several threads or processes at once for one sweep dir.
    """
    started = time.perf_counter()
    launch_dir = (launch_dir or Path.cwd()).absolute()
    roots, sesemi_why = _roots(src_dir, launch_dir, with_sesemi)
    found = _Found()
    for role, root in roots.items():
        _walk(root, role, found)
    _warn_skipped(found.skipped)
    contents = {rel: found.files[rel].read_bytes() for rel in sorted(found.files)}
    digest = _digest(contents)
    store = sweep_dir.absolute() / STORE
    final = store / digest[:16]
    snapshot = Snapshot(final, digest, roots, launch_dir)
    if (final / MANIFEST).is_file():
        return Snapshot(final, digest, roots, launch_dir, reused=True)
    store.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".tmp-", dir=store))
    try:
        _write(staging, contents, found.files)
        manifest = _manifest(snapshot, contents, found, staging, sesemi_why)
        manifest["seconds"] = round(time.perf_counter() - started, 4)
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
        os.rename(staging, final)
    except OSError:
        if not (final / MANIFEST).is_file():  # not a concurrent take() that got there first
            raise
        return Snapshot(final, digest, roots, launch_dir, reused=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return snapshot


def _digest(contents: dict[str, bytes]) -> str:
    digest = hashlib.sha256()
    for rel, data in contents.items():
        digest.update(f"{rel}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()


def _write(staging: Path, contents: dict[str, bytes], sources: dict[str, Path]) -> None:
    """The copies, from the bytes that were hashed (a file edited meanwhile cannot make them disagree); executable
    files stay executable (a script the user's code runs)."""
    made: set[Path] = set()
    for rel, data in contents.items():
        target = staging / rel
        if target.parent not in made:
            target.parent.mkdir(parents=True, exist_ok=True)
            made.add(target.parent)
        target.write_bytes(data)
        if os.access(sources[rel], os.X_OK):
            target.chmod(target.stat().st_mode | 0o111)


def _warn_skipped(skipped: Sequence[dict[str, Any]]) -> None:
    big = [s for s in skipped if "size" in s]
    if big:
        listed = ", ".join(f"{s['path']} ({s['size'] / (1 << 20):.1f} MiB)" for s in big[:10])
        more = f" and {len(big) - 10} more" if len(big) > 10 else ""
        log.warning(
            "sesemi: the jobs' code snapshot leaves out %d file(s) over %d MiB: %s%s; the jobs do not see them "
            "(datasets belong in the data root, run.data_root)",
            len(big),
            MAX_FILE_BYTES >> 20,
            listed,
            more,
        )


def _manifest(
    snapshot: Snapshot, contents: dict[str, bytes], found: _Found, staging: Path, sesemi_why: str
) -> dict[str, Any]:
    roots = [root.resolve() for root in snapshot.roots.values()]
    outside = {link for link in found.links if not any(link.is_relative_to(root) for root in roots)}
    repos = _git_records([*roots, *sorted(outside)], staging)
    return {
        "digest": snapshot.digest,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "launch_dir": str(snapshot.launch_dir),
        "python": sys.executable,
        "roots": {role: str(root) for role, root in snapshot.roots.items()},
        "sesemi": {"copied": SESEMI in snapshot.roots, "why": sesemi_why},
        "files": {rel: len(data) for rel, data in contents.items()},
        "bytes": sum(len(data) for data in contents.values()),
        "skipped": found.skipped,
        "git": repos,
    }


def _git(args: Sequence[str], cwd: Path) -> str | None:
    try:
        proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout if proc.returncode == 0 else None


def _git_records(paths: Iterable[Path], staging: Path) -> list[dict[str, Any]]:
    """For each git repository holding some of ``paths``: its commit, the diff of those paths against it (written to
    ``staging/git-<n>.diff``) and their untracked files."""
    by_repo: dict[Path, list[str]] = {}
    for path in paths:
        top = _git(["rev-parse", "--show-toplevel"], path)
        if top:
            repo = Path(top.strip())
            by_repo.setdefault(repo, []).append(os.path.relpath(path.resolve(), repo.resolve()))
    records = []
    for n, (repo, specs) in enumerate(by_repo.items()):
        commit = _git(["rev-parse", "--verify", "--quiet", "HEAD"], repo)
        record: dict[str, Any] = {"repo": str(repo), "paths": specs, "commit": commit.strip() if commit else None}
        if commit:
            diff = _git(["diff", "--binary", "HEAD", "--", *specs], repo) or ""
            record["diff"] = f"git-{n}.diff" if diff else None
            if diff:
                (staging / f"git-{n}.diff").write_text(diff)
        untracked = _git(["ls-files", "--others", "--exclude-standard", "-z", "--", *specs], repo) or ""
        record["untracked"] = [p for p in untracked.split("\0") if p]
        records.append(record)
    return records


def load(path: Path) -> Snapshot:
    """The snapshot at ``path`` (``<sweep dir>/.code/<digest>``), from its manifest."""
    manifest = json.loads((path / MANIFEST).read_text())
    roots = {role: Path(root) for role, root in manifest["roots"].items()}
    return Snapshot(path, manifest["digest"], roots, Path(manifest["launch_dir"]), reused=True)


def job_environment(snapshot: Snapshot) -> dict[str, str]:
    """The environment a job of ``snapshot`` starts with: ``SESEMI_SNAPSHOT``, and ``PYTHONPATH`` with the
    snapshot's ``lib/`` (sesemi) and ``src/`` ahead of what the submitting process had. When sesemi is copied and
    the launch dir holds a ``sesemi`` package (launched from sesemi's clone), ``PYTHONSAFEPATH=1`` too: ``python -m``
    puts the working directory ahead of ``PYTHONPATH`` (Python 3.11+ honours it)."""
    entries = [str(p) for p in (snapshot.lib, snapshot.src) if p is not None]
    if os.environ.get("PYTHONPATH"):
        entries.append(os.environ["PYTHONPATH"])
    env = {ENV: str(snapshot.path)}
    if entries:
        env["PYTHONPATH"] = os.pathsep.join(entries)
    if snapshot.lib is not None and (snapshot.launch_dir / "sesemi" / "__init__.py").is_file():
        env["PYTHONSAFEPATH"] = "1"
    return env


def python_command(snapshot: Snapshot, python: str | None = None) -> str:
    """submitit's ``python`` parameter for the jobs of ``snapshot``: ``env VAR=... <python>``.

    ``python``: the interpreter command (``hydra.launcher.python``, a shell command; default this interpreter).
    submitit appends its arguments and runs the line through ``srun`` in the sbatch script, or splits it with
    ``shlex`` and runs it (local executor): ``env`` works in both.
    """
    assignments = [shlex.quote(f"{key}={value}") for key, value in job_environment(snapshot).items()]
    return " ".join(["env", *assignments, python or shlex.quote(sys.executable)])


# ------------------------------------------------------------------------------------------------- job side
def current() -> Snapshot | None:
    """The snapshot this process was started from (``SESEMI_SNAPSHOT``), or None."""
    path = os.environ.get(ENV)
    return load(Path(path)) if path else None


def enter(config_loader: Any = None) -> Snapshot | None:
    """A job's first step: import the user's code from the snapshot's ``src/`` (first on ``sys.path``, the live
    ``src/`` off it) and compose from its ``configs/`` (``config_loader``: the Hydra config loader pickled at
    submission, ``HydraContext.config_loader``). Returns the snapshot, None in a process started without one."""
    snapshot = current()
    if snapshot is None:
        return None
    if snapshot.src is not None:
        live = str(snapshot.roots[SRC])
        sys.path[:] = [str(snapshot.src), *(p for p in sys.path if p not in (live, str(snapshot.src)))]
    if config_loader is not None and snapshot.configs is not None:
        from sesemi.compat.hydra import repoint_search_path

        repoint_search_path(config_loader, f"file://{snapshot.roots[CONFIGS]}", f"file://{snapshot.configs}")
    if snapshot.lib is not None:
        _check_sesemi(snapshot.lib)
    return snapshot


def _check_sesemi(lib: Path) -> None:
    import sesemi

    if not Path(sesemi.__file__).resolve().is_relative_to(lib.resolve()):
        log.warning(
            "sesemi: this job runs sesemi from %s, not from its code snapshot %s (was the job started without the "
            "snapshot's PYTHONPATH, or from sesemi's clone on Python < 3.11?)",
            Path(sesemi.__file__).parent,
            lib,
        )


def pin_src_dir(cfg: Any, snapshot: Snapshot | None = None) -> None:
    """Make a composed config's ``run.src_dir`` name the snapshot's ``src/`` when it names the live one that was
    copied (the run puts ``run.src_dir`` first on ``sys.path``; its ``.hydra/config.yaml`` then says where the code
    came from). Relative paths are read from the working directory, as the run reads them."""
    from omegaconf import OmegaConf, open_dict

    snapshot = snapshot or current()
    value = OmegaConf.select(cfg, "run.src_dir", default=None)
    if snapshot is None or snapshot.src is None or not value:
        return
    if Path(value).absolute() == snapshot.roots[SRC]:
        with open_dict(cfg):
            cfg.run.src_dir = str(snapshot.src)
