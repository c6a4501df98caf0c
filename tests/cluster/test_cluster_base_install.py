"""The base install (no ``cluster``/``sweep`` extras): silent plugin discovery, one clear error for the launchers.

The shared test venv has the extras, and building a second venv with torch for one test costs minutes and
gigabytes. So the CLI runs with a ``sitecustomize`` on its PYTHONPATH that makes the extras absent the two ways a
base install lacks them: their modules do not import (``submitit``, ``optuna``; the ``hydra_plugins`` namespace holds
only sesemi's own ``sesemi_plugins``), and their distributions are not listed by ``importlib.metadata`` (where Hydra
reads plugin entry points). Everything else is the real install. tests/test_packaging.py builds a real base install
from the wheel.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import run_cli

BASE_INSTALL = """
import importlib.abc, importlib.machinery, importlib.metadata as metadata, sys

EXTRA_MODULES = ("submitit", "optuna")
EXTRA_DISTRIBUTIONS = ("hydra-submitit-launcher", "submitit", "hydra-optuna-sweeper", "optuna")
SESEMI_PLUGINS = %r  # the folder of hydra_plugins/sesemi_plugins


class _Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "hydra_plugins":  # as a base install has it: sesemi's plugins only, Hydra's are the extras'
            spec = importlib.machinery.ModuleSpec(name, None, is_package=True)
            spec.submodule_search_locations = [SESEMI_PLUGINS]
            return spec
        if name.split(".")[0] in EXTRA_MODULES:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, _Absent())
_distributions = metadata.distributions
metadata.distributions = lambda **kw: (
    d for d in _distributions(**kw) if d.metadata["Name"].lower().replace("_", "-") not in EXTRA_DISTRIBUTIONS
)
"""


@pytest.fixture
def base_install(tmp_path: Path) -> dict[str, str]:
    site = tmp_path / "base_install"
    site.mkdir()
    import hydra_plugins.sesemi_plugins

    plugins = Path(hydra_plugins.sesemi_plugins.__file__).parents[1]
    (site / "sitecustomize.py").write_text(BASE_INSTALL % str(plugins))
    return {"PYTHONPATH": os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p)}


def test_the_extras_are_absent_under_the_blocker(base_install):
    proc = subprocess.run(
        [sys.executable, "-c", "import submitit"], env={**os.environ, **base_install}, capture_output=True, text=True
    )
    assert proc.returncode == 1 and "No module named 'submitit'" in proc.stderr


def test_a_base_install_starts_without_plugin_warnings(workdir: Path, base_install):
    proc = run_cli(["--cfg", "job"], workdir, fast=False, env=base_install)
    assert "Error loading Hydra plugin" not in proc.stderr, proc.stderr
    assert "Warning" not in proc.stderr, proc.stderr


@pytest.mark.parametrize("launcher", ["slurm", "slurm_cpu", "local"])
def test_choosing_a_cluster_launcher_without_the_extra_is_one_clear_error(workdir: Path, base_install, launcher):
    proc = run_cli(["-m", f"hydra/launcher={launcher}"], workdir, env=base_install, check=False)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert proc.stderr.strip() == (
        "sesemi: error: hydra/launcher: the slurm, slurm_cpu and local launchers need submitit and "
        "hydra-submitit-launcher (hydra-submitit-launcher is not installed). Fix: pip install 'sesemi[cluster]'"
    )
    assert not list(workdir.glob("runs/*/*/*"))  # nothing ran
