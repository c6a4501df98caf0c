"""Errors a user can fix by changing the configuration.

Every message names the config key at fault and how to fix it, so the CLI can print it as the one line a user needs.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration value that cannot work, with the key that holds it and the fix."""

    def __init__(self, key: str, problem: str, fix: str) -> None:
        self.key = key
        self.problem = " ".join(problem.split()).rstrip(".")  # one line, whatever the wrapped error printed
        self.fix = fix
        super().__init__(f"{key}: {self.problem}. Fix: {fix}")
