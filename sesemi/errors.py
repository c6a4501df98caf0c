"""Errors a user can fix by changing the configuration.

Every message names the config key at fault and how to fix it, so the CLI can print it as the one line a user needs.
"""

from __future__ import annotations

import re
import shlex
import sys
from collections.abc import Sequence
from typing import NoReturn


class ConfigError(ValueError):
    """A configuration value that cannot work, with the key that holds it and the fix."""

    def __init__(self, key: str, problem: str, fix: str) -> None:
        self.key = key
        self.problem = " ".join(problem.split()).rstrip(".")  # one line, whatever the wrapped error printed
        self.fix = fix
        super().__init__(f"{key}: {self.problem}. Fix: {fix}")


def exit_with(err: BaseException | str, code: int = 2) -> NoReturn:
    """Print ``err`` as a command's one error line (``sesemi: error: ...``) and exit with ``code`` (2: bad input).

    Every sesemi command ends this way on an error a user can fix; for the training app, this is for the checks
    that run outside a job (while Hydra resolves its own config, in a launcher or sweeper), where no caller would
    turn the exception into that line."""
    print(f"sesemi: error: {err}", file=sys.stderr, flush=True)
    raise SystemExit(code)


# Overrides that a fix prints: each one is a shell word that Hydra reads back as the very strings given.
_BARE = re.compile(r"[A-Za-z0-9_/+.%*@?|-]+")  # a value Hydra's grammar reads as itself without quotes
_NOT_A_STRING = re.compile(r"[0-9.+-]+|true|false|null|nan|inf", re.IGNORECASE)


def hydra_value(item: str) -> str:
    """``item`` as a string in Hydra's override grammar: bare when the grammar allows it, else double-quoted.

    In a quoted value Hydra reads a backslash as itself except in a run of them before a quote (or the closing
    quote), which it halves; ``${`` would start an interpolation."""
    if _BARE.fullmatch(item) and not _NOT_A_STRING.fullmatch(item):
        return item
    escaped = re.sub(r'\\+(?="|$)', lambda run: run.group(0) * 2, item).replace('"', '\\"').replace("${", "\\${")
    return f'"{escaped}"'


def override(key: str, value: str) -> str:
    """``key=value`` as one shell word, ``value`` a string whatever it looks like (a path with spaces, ``=``...)."""
    return shlex.quote(f"{key}={hydra_value(str(value))}")


def list_override(key: str, items: Sequence[str]) -> str:
    """``++key=[item,...]`` (set the key, or add it where the config has none) as one shell word."""
    return shlex.quote(f"++{key}=[{','.join(hydra_value(str(i)) for i in items)}]")
