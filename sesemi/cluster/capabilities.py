"""What a launcher can do, asked by sesemi's sweepers through a small typed interface (never by class name).

A sweeper needs to know whether the launcher runs each job in a process of its own (else parallel trials need
local processes of their own), whether its jobs are SLURM jobs (they outlive the submitting process, so a sweep can
detach), and whether it returns at submission without results (``hydra.launcher.wait=false``). A launcher, in turn,
must not detach a sweeper that chooses its next points from the results: the sweeper tells it whether its launches
need results (:meth:`SweepLauncher.expect_results`). Launchers that are not sesemi's (Hydra's basic launcher and
others) answer nothing and count as running jobs inside the sweeper's process.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True)
class LaunchCapabilities:
    processes: bool  # each job runs in a process of its own, so a sweeper may run several at once
    slurm: bool  # jobs are SLURM jobs: they outlive the submitting process, and preempted ones are requeued
    detached: bool  # launch() returns once the jobs are submitted, without results (hydra.launcher.wait=false)


IN_PROCESS = LaunchCapabilities(processes=False, slurm=False, detached=False)


@runtime_checkable
class SweepLauncher(Protocol):
    """The part of a launcher that sesemi's sweepers talk to."""

    def capabilities(self) -> LaunchCapabilities: ...

    def expect_results(self, needed: bool) -> None:
        """Whether the sweeper reads the results of its launches (a launcher that would detach then refuses)."""


def capabilities_of(launcher: Any) -> LaunchCapabilities:
    return launcher.capabilities() if isinstance(launcher, SweepLauncher) else IN_PROCESS


def expect_results(launcher: Any, needed: bool) -> None:
    if isinstance(launcher, SweepLauncher):
        launcher.expect_results(needed)
