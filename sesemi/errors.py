"""Errors a user can fix by changing the configuration.

Every message names the config key at fault and how to fix it, so the CLI can print it as the one line a user needs.
"""

from __future__ import annotations

import sys
from typing import NoReturn


class ConfigError(ValueError):
    """A configuration value that cannot work, with the key that holds it and the fix."""

    def __init__(self, key: str, problem: str, fix: str) -> None:
        self.key = key
        self.problem = " ".join(problem.split()).rstrip(".")  # one line, whatever the wrapped error printed
        self.fix = fix
        super().__init__(f"{key}: {self.problem}. Fix: {fix}")


def exit_with(err: ConfigError) -> NoReturn:
    """Print ``err`` as the CLI's one error line and exit 2: for checks that run before the task function (while
    Hydra resolves its own config), where no caller would turn the exception into that line."""
    print(f"sesemi: error: {err}", file=sys.stderr)
    sys.exit(2)
