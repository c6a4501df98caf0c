"""sesemi.compat.hydra and hydra_plugins.sesemi_plugins against the installed Hydra line (1.4, or 1.3.2 with
hydra-submitit-launcher 1.2.0): each switch does on this line what sesemi needs, and Hydra's own submitit launcher
runs jobs with this submitit (OmegaConf's switch: test_omegaconf.py; the launcher schemas: test_hydra_submitit.py)."""

from __future__ import annotations

import inspect
import json
import logging
import shutil
import subprocess
import sys
import textwrap
import warnings
from collections import OrderedDict
from pathlib import Path

import hydra
import pytest
from hydra import compose
from hydra.core.global_hydra import GlobalHydra
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus
from hydra.errors import InstantiationException
from hydra.plugins.launcher import Launcher
from hydra.plugins.search_path_plugin import SearchPathPlugin
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext
from omegaconf import OmegaConf
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from sesemi.compat import hydra as hydra_compat

APP = """
import json
import os
import sys

from sesemi.compat.hydra import main


@main(config_path="conf", config_name="config")
def app(cfg):
    print(json.dumps({"cwd": os.getcwd(), "x": cfg.x, "y": cfg.y}))


if __name__ == "__main__":
    app()
"""

# A plain Hydra app, launched by Hydra's own submitit launcher: each job records its number and its x.
SUBMITIT_APP = """
import json
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig


@hydra.main(config_path="conf", config_name="config")
def app(cfg):
    out = Path(cfg.out) / f"job{HydraConfig.get().job.num}.json"
    out.write_text(json.dumps({"x": cfg.x}))


if __name__ == "__main__":
    app()
"""


def _app(tmp_path: Path, source: str, config: str = "x: 1\ny: 0\n") -> Path:
    app = tmp_path / "app"
    (app / "conf").mkdir(parents=True)
    (app / "app.py").write_text(textwrap.dedent(source).lstrip())
    (app / "conf" / "config.yaml").write_text(config)
    return app / "app.py"


def test_the_hydra_line_is_the_installed_one():
    assert tuple(int(p) for p in hydra.__version__.split(".")[:2]) == hydra_compat.HYDRA_LINE
    assert hydra_compat.HYDRA_LINE in {(1, 3), (1, 4)}


def test_main_runs_the_job_where_it_was_launched_without_a_warning(tmp_path: Path):
    """Hydra 1.3's ``hydra.main`` without ``version_base`` warns and runs the job inside its output dir."""
    app = _app(tmp_path, APP)
    launch = tmp_path / "launch"
    launch.mkdir()
    proc = subprocess.run(
        [sys.executable, "-W", "default", str(app), "x=2", f"hydra.run.dir={tmp_path / 'out'}"],
        cwd=launch,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {"cwd": str(launch), "x": 2, "y": 0}
    assert "version_base" not in proc.stderr and "Warning" not in proc.stderr, proc.stderr


def test_main_reads_overrides_on_both_sides_of_an_option(tmp_path: Path):
    """``y=3 -m x=1,2`` (what Hydra 1.4 takes, Hydra 1.3's parser refuses) is a two-job sweep on both lines."""
    app = _app(tmp_path, APP)
    proc = subprocess.run(
        [sys.executable, str(app), "y=3", "-m", "x=1,2", f"hydra.sweep.dir={tmp_path / 'sweep'}"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    jobs = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert [(j["x"], j["y"]) for j in jobs] == [(1, 3), (2, 3)]


def test_initialize_config_module_composes_with_this_lines_behaviour():
    GlobalHydra.instance().clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with hydra_compat.initialize_config_module("sesemi.configs"):
            cfg = compose("train", return_hydra_config=True)
    GlobalHydra.instance().clear()
    assert not [w for w in caught if "version_base" in str(w.message)]
    assert cfg.hydra.runtime.version_base == ".".join(map(str, hydra_compat.HYDRA_LINE))


def test_instantiate_builds_a_configs_target_with_its_arguments():
    built = hydra_compat.instantiate({"_target_": "collections.OrderedDict", "a": 1}, b=2)
    assert type(built) is OrderedDict and built == {"a": 1, "b": 2}


@pytest.mark.skipif(hydra_compat.HYDRA_LINE < (1, 4), reason="Hydra 1.4's execution checks")
def test_instantiate_opts_out_of_hydra_14s_execution_checks():
    node = {"_target_": "operator.itemgetter", "_args_": [1]}
    with pytest.raises(InstantiationException, match="itemgetter"):
        hydra.utils.instantiate(node)
    assert hydra_compat.instantiate(node)(["a", "b"]) == "b"


def test_configure_log_sets_up_a_jobs_logging():
    root = logging.getLevelName(logging.getLogger().level)
    log_config = OmegaConf.create(
        {
            "version": 1,
            "incremental": True,
            "root": {"level": root},
            "loggers": {"sesemi_compat_test": {"level": "DEBUG"}},
        }
    )
    hydra_compat.configure_log(HydraContext(config_loader=None, callbacks=None), log_config, False)
    assert logging.getLogger("sesemi_compat_test").level == logging.DEBUG


def test_sesemis_plugins_are_found_under_names_this_hydra_accepts():
    """Each of sesemi's plugins is a ``hydra_plugins.`` class (the only names Hydra 1.3 instantiates), and this Hydra
    finds it under that name (Hydra 1.3 by its scan, 1.4 through the entry points)."""
    import hydra_plugins.sesemi_plugins as plugins
    from sesemi.cluster import launcher
    from sesemi.sweep import grid, sweeper
    from sesemi.workspace import WorkspaceSearchPath

    expected = {
        "WorkspaceSearchPath": (WorkspaceSearchPath, SearchPathPlugin),
        "SlurmLauncher": (launcher.SlurmLauncher, Launcher),
        "LocalLauncher": (launcher.LocalLauncher, Launcher),
        "OptunaSweeper": (sweeper.OptunaSweeper, Sweeper),
        "GridSweeper": (grid.GridSweeper, Sweeper),
    }
    for name, (base, kind) in expected.items():
        found = {f"{c.__module__}.{c.__qualname__}": c for c in Plugins.instance().discover(kind)}
        plugin = found.get(f"hydra_plugins.sesemi_plugins.{name}")
        assert plugin is not None and issubclass(plugin, base), (name, sorted(found))
        assert issubclass(getattr(plugins, name), base)


GRID_BEFORE_THE_SCAN = """
import sesemi.sweep.grid  # before Hydra's first plugin scan (which, on Hydra 1.3, executes basic_sweeper again)
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus

from sesemi.compat.hydra import instantiate

Plugins.instance()
sweeper = instantiate({"_target_": "hydra_plugins.sesemi_plugins.GridSweeper", "max_batch_size": 2, "params": None})
print(type(sweeper).__name__, sweeper.basic.max_batch_size)
"""


def test_the_grid_sweeper_is_made_after_sesemi_sweep_grid_was_imported_before_hydras_plugin_scan():
    """A subclass of Hydra 1.3's BasicSweeper made before the scan fails in ``BasicSweeper.__init__`` ("obj must be
    an instance or subtype of type"); sesemi's grid sweeper holds one, made when the grid sweeper is."""
    proc = subprocess.run([sys.executable, "-c", GRID_BEFORE_THE_SCAN], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["GridSweeper", "2"]


def _run_submitit_app(tmp_path: Path, launcher: list[str]) -> list[dict]:
    out = tmp_path / "out"
    out.mkdir()
    app = _app(tmp_path, SUBMITIT_APP, f"x: 0\nout: {out}\n")
    proc = subprocess.run(
        [sys.executable, str(app), "-m", "x=1,2", *launcher, f"hydra.sweep.dir={tmp_path / 'sweep'}"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return [json.loads((out / f"job{n}.json").read_text()) for n in (0, 1)]


def test_the_optuna_sweepers_reading_of_the_search_space_grammar():
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason="hydra-optuna-sweeper (the Hydra 1.4 line)")
    distributions, fixed, other = hydra_compat.search_space(
        ["a=tag(log, interval(0.01, 1.0))", "b=choice(1, 2)", "c=range(16, 65, 16)", "d=3", "~e"]
    )
    assert isinstance(distributions["a"], FloatDistribution) and distributions["a"].log
    assert isinstance(distributions["b"], CategoricalDistribution)
    assert isinstance(distributions["c"], IntDistribution) and fixed == {"d": "3"} and other == ["~e"]
    assert hydra_compat.grid_choices(distributions["c"]) == [16, 32, 48, 64]


def test_job_error_is_a_failed_jobs_exception_without_raising_it():
    failed = JobReturn(status=JobStatus.FAILED, _return_value=ValueError("boom"))
    assert isinstance(hydra_compat.job_error(failed), ValueError)
    assert hydra_compat.job_error(JobReturn(status=JobStatus.COMPLETED, _return_value=1.0)) is None


def test_hydra_launcher_api():
    for name in hydra_compat.__all__:
        assert getattr(hydra_compat, name) is not None, name
    failed = JobReturn(overrides=[], status=JobStatus.FAILED)
    failed.return_value = ValueError("boom")
    assert isinstance(hydra_compat.job_error(failed), ValueError)
    from hydra.core.config_loader import ConfigLoader

    assert "load_sweep_config" in ConfigLoader.__abstractmethods__
    assert {"hydra_context", "task_function", "config", "job_dir_key", "job_subdir_key", "configure_logging"} <= set(
        inspect.signature(hydra_compat.run_job).parameters
    )


@pytest.mark.slow  # two submitit jobs (processes)
def test_hydras_own_submitit_launcher_runs_jobs_with_this_submitit(tmp_path: Path):
    """hydra-submitit-launcher (1.2.0 on the Hydra 1.3 line, 1.4 on the 1.4 line) with submitit 1.5."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    assert _run_submitit_app(tmp_path, ["hydra/launcher=submitit_local"]) == [{"x": 1}, {"x": 2}]


@pytest.mark.slow
@pytest.mark.slurm
@pytest.mark.skipif(shutil.which("sinfo") is None, reason="no SLURM client (scripts/slurm_cluster.sh start)")
def test_hydras_own_submitit_launcher_runs_slurm_jobs_with_this_submitit(tmp_path: Path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    slurm = ["hydra/launcher=submitit_slurm", "hydra.launcher.partition=debug", "hydra.launcher.timeout_min=5"]
    assert _run_submitit_app(tmp_path, [*slurm, "hydra.launcher.cpus_per_task=1"]) == [{"x": 1}, {"x": 2}]
