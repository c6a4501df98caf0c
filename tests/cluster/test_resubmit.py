"""sesemi.cluster.resubmit: what ``python -m sesemi.status <sweep dir> --resubmit KEY=VALUE`` may change (resources
only); the resubmission itself on SLURM: tests/cluster/test_status_slurm.py."""

from __future__ import annotations

import pytest

from sesemi.cluster.resubmit import parse_changes


def test_resubmit_only_changes_resources():
    assert parse_changes(["hydra.launcher.timeout_min=120", "hydra.launcher.partition=long"]) == {
        "timeout_min": 120,
        "partition": "long",
    }
    with pytest.raises(ValueError, match="only resources can change"):
        parse_changes(["optimizer.lr=0.1"])
