"""The error raised when a built-in dataset's files are not where its loader looks, and helpers to raise it."""

from __future__ import annotations

import os
import shlex
from collections.abc import Sequence
from pathlib import Path

RELATIVE_NOTE = (
    "Dataset paths in the config are relative to run.data_root; "
    "set run.data_root (or the dataset's root) to the folder that holds the data."
)


class DatasetNotFoundError(FileNotFoundError):
    """A dataset's files are missing. The message names the directory, the expected files and how to get them.

    The constructor takes the finished message only (so the exception pickles and re-raises cleanly from
    DataLoader workers); build one with :meth:`missing`.
    """

    @classmethod
    def missing(
        cls,
        dataset: str,
        directory: str | os.PathLike,
        expected: Sequence[str],
        how_to_get: str,
        missing: Sequence[str] | None = None,
    ) -> DatasetNotFoundError:
        """An error for ``dataset`` whose ``expected`` files (those in ``missing``) are not in ``directory``."""
        text = f"{dataset} not found: looked in {directory} for {', '.join(expected)}"
        if missing is not None and list(missing) != list(expected):
            text += f" (missing: {', '.join(missing)})"
        return cls(f"{text}. {how_to_get} {RELATIVE_NOTE}")


class DatasetFilesError(ValueError):
    """Files of a dataset that cannot be used as they are (a symlink loop, an empty class folder); the message names
    them and ``fix`` says what to do.

    A fix that sets an argument of the dataset writes ``{key}`` where the dataset's config key goes: :meth:`fix_at`
    fills it in (the builders know the key, the dataset does not). Built from the message and the fix only, so it
    pickles cleanly, and from the message alone, as a DataLoader worker's exception is re-raised.
    """

    def __init__(self, message: str, fix: str = "") -> None:
        super().__init__(message, fix)

    def __str__(self) -> str:
        return str(self.args[0])

    def fix_at(self, key: str) -> str:
        """The fix for the dataset built from config key ``key`` (``data.train``, ...)."""
        return str(self.args[1]).replace("{key}", key)

    @property
    def fix(self) -> str:
        return self.fix_at("<the dataset's config key>")


class CorruptImagesError(DatasetFilesError):
    """Image files that cannot be decoded; the message names them and ``fix`` says what to do."""

    @classmethod
    def found(
        cls, dataset: str, root: str | os.PathLike, total: int, errors: Sequence[tuple[str, str]]
    ) -> CorruptImagesError:
        shown = "; ".join(f"{path} ({error})" for path, error in errors[:5])
        more = f"; and {len(errors) - 5} more" if len(errors) > 5 else ""
        remove = f" (rm {' '.join(shlex.quote(str(path)) for path, _ in errors)})" if len(errors) <= 5 else ""
        return cls(
            f"{dataset} {root}: {len(errors)} of {total} images cannot be decoded: {shown}{more}",
            f"delete those files{remove} or replace them with good copies (or move them out of the dataset's "
            "folders); the dataset's verify=True (the default) checks every image before training",
        )


def dataset_dir(root: str | os.PathLike, folder: str, marker: str) -> Path:
    """The dataset's directory: ``root/folder``, or ``root`` itself when the user pointed at that folder.

    ``root`` counts as the folder itself when it is named ``folder`` or holds ``marker`` (a file always present in
    the extracted archive) and has no ``folder`` inside. Otherwise ``root/folder`` is returned, even if absent, so
    the not-found message names the place a freshly extracted archive would land.
    """
    root = Path(root)
    nested = root / folder
    if nested.is_dir():
        return nested
    if root.name == folder or (root / marker).is_file():
        return root
    return nested


def require_files(directory: Path, names: Sequence[str], dataset: str, how_to_get: str) -> list[Path]:
    """The paths of ``names`` in ``directory``; raises :class:`DatasetNotFoundError` listing any that are absent."""
    paths = [directory / name for name in names]
    absent = [p.name for p in paths if not p.is_file()]
    if absent:
        raise DatasetNotFoundError.missing(dataset, directory, names, how_to_get, absent)
    return paths
