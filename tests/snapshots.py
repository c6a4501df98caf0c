"""Byte-for-byte snapshots of a directory tree, to show that a failed command changed nothing it should not."""

from __future__ import annotations

import hashlib
from pathlib import Path


def tree_bytes(root: Path) -> dict[str, str]:
    """``{relative path: sha256 of its bytes}`` for every file below ``root`` (directories as ``"<dir>"``)."""
    snapshot = {}
    for path in sorted(root.rglob("*")):
        key = str(path.relative_to(root))
        snapshot[key] = "<dir>" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return snapshot


def changes(before: dict[str, str], after: dict[str, str]) -> list[str]:
    """Paths added, removed or whose bytes differ."""
    return sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
