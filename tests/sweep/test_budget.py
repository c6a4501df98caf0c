"""Budget-matched trials and a baseline beside them (``hydra.sweeper.budget``, ``hydra.sweeper.baseline``,
sesemi.sweep.budget): the overrides they make, the refusals before anything is created, and docs/sweeps.md's
real tiny sweep: every trial's learning rate ends at ~0 when its budget is spent, and the supervised baseline at
the same budget appears in the report."""

from __future__ import annotations

import json
import math
import re
import shlex
from pathlib import Path

import pytest
import yaml
from conftest import FAST, run_cli

from sesemi.errors import ConfigError
from sesemi.sweep.budget import baseline_list, baseline_overrides, budget_overrides, time_form, with_budget

DOC = Path(__file__).resolve().parents[2] / "docs" / "sweeps.md"
HEADING = "## Budget-matched trials and a baseline"


def test_the_time_form_of_each_schedule():
    assert time_form("cosine") == "cosine_time"
    assert time_form("fixmatch_cosine") == "fixmatch_cosine_time"
    assert time_form("cosine_time") == "cosine_time" and time_form("constant") == "constant"
    assert time_form("my_decay") == "my_decay_time"  # a schedule of the user's own: its _time config
    assert budget_overrides("00:00:10:00", "fixmatch_cosine") == [
        "trainer.max_time='00:00:10:00'",
        "lr_scheduler=fixmatch_cosine_time",
    ]


def test_the_budget_takes_the_place_of_the_commands_schedule():
    args = ["hparams_search=digits_fixmatch", "lr_scheduler=fixmatch_cosine", "trainer.max_steps=100000"]
    assert with_budget(args, None, "00:00:01:00", "cosine") == [
        "hparams_search=digits_fixmatch",
        "trainer.max_steps=100000",
        "trainer.max_time='00:00:01:00'",
        "lr_scheduler=fixmatch_cosine_time",  # the command line's family, over the config's
    ]
    assert with_budget([], None, "00:00:01:00", "cosine")[-1] == "lr_scheduler=cosine_time"


@pytest.mark.parametrize(
    ("args", "params", "budget", "problem"),
    [
        ([], None, "ten minutes", "is 'ten minutes'"),
        ([], None, "00:00:00:00", "no time at all"),
        (["trainer.max_time=00:00:05:00"], None, "00:00:01:00", "so does the command line"),
        (["lr_scheduler=cosine,constant"], None, "00:00:01:00", "swept"),
        ([], {"lr_scheduler": "choice(cosine, constant)"}, "00:00:01:00", "swept"),
    ],
)
def test_a_budget_that_cannot_be_kept_is_refused(args, params, budget, problem):
    with pytest.raises(ConfigError) as err:
        with_budget(args, params, budget, "cosine")
    assert err.value.key == "hydra.sweeper.budget" and problem in err.value.problem


def test_the_baseline_is_the_sweeps_fixed_settings_with_its_own_on_top():
    assert baseline_list({"method": "supervised", "callbacks.images": None, "run.channels_last": True}) == [
        "method=supervised",
        "callbacks.images=null",
        "run.channels_last=true",
    ]
    assert baseline_list("method=supervised 'optimizer.lr=0.1'") == ["method=supervised", "optimizer.lr=0.1"]
    assert baseline_list(["method=supervised"]) == ["method=supervised"] and baseline_list(None) == []
    with pytest.raises(ConfigError) as err:
        baseline_list("supervised")
    assert err.value.key == "hydra.sweeper.baseline"
    fixed = ["method=fixmatch", "trainer.max_time='00:00:00:15'", "hydra.sweep.dir=/s"]
    assert baseline_overrides(["method=supervised"], {"data.labels_per_class": 4}, fixed) == [
        "data.labels_per_class=4",
        "trainer.max_time='00:00:00:15'",
        "hydra.sweep.dir=/s",
        "method=supervised",
        "hydra.sweep.subdir=baseline",
    ]


def _doc_commands() -> list[list[str]]:
    section = DOC.read_text().split(HEADING, 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, flags=re.S)
    assert block, f"no command under {HEADING}"
    return [shlex.split(line) for line in block.group(1).strip().splitlines()]


# The tests' tiny data and loader settings (FAST without its step counts: the docs' command sets its own), and a
# narrow network: many steps fit the budget on a loaded machine.
TINY_DATA = [o for o in FAST if not o.startswith(("trainer.max_steps", "trainer.val_check_interval"))]
TINY_DATA += ["model.backbone.width=16"]


@pytest.mark.slow
def test_the_docs_budget_sweep_ends_every_learning_rate_at_the_budget_beside_a_baseline(tmp_path: Path):
    sweep_cmd, report_cmd = _doc_commands()
    assert sweep_cmd[:3] == ["python", "-m", "sesemi.train"] and report_cmd[:3] == [
        "python",
        "-m",
        "sesemi.sweep_report",
    ]
    args = sweep_cmd[3:]
    budget_s = 15
    assert f"hydra.sweeper.budget=00:00:00:{budget_s}" in args
    proc = run_cli([*TINY_DATA, *args], tmp_path, fast=False, timeout=480)
    sweep = tmp_path / "runs" / "sweeps" / "digits_budget"
    run_dirs = [*sorted(sweep.glob("trial_*")), sweep / "baseline"]
    assert len(run_dirs) == 3, proc.stdout[-2000:]
    for run_dir in run_dirs:
        metrics = json.loads((run_dir / "metrics.json").read_text())
        config = yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text())
        assert config["trainer"]["max_time"] == f"00:00:00:{budget_s}"
        assert config["lr_scheduler"]["_target_"] == "sesemi.schedules.cosine_time"
        assert metrics["stopped_by"].startswith(f"max_time (00:00:00:{budget_s})"), (run_dir, metrics["stopped_by"])
        # The learning rate of the last step (logged at every step) is the curve at that step's start: ~0 of the
        # run's own base rate, within what N steps in the budget resolve (the docs' bound).
        steps = metrics["global_step"]
        bound = max(0.02, math.sin(1.5 * math.pi / steps) ** 2)
        assert metrics["final"]["lr/decay"] <= bound * config["optimizer"]["lr"], (run_dir, steps, metrics["final"])
        assert json.loads((run_dir / "status.json").read_text())["state"] == "completed"
    baseline = yaml.safe_load((sweep / "baseline" / ".hydra" / "config.yaml").read_text())
    assert baseline["method"]["loss_heads"].keys() == {"supervised"}  # method=supervised, no search parameter
    trial = yaml.safe_load((sweep / "trial_0000" / ".hydra" / "config.yaml").read_text())
    assert "fixmatch" in trial["method"]["loss_heads"]

    report = run_cli([*report_cmd[3:], "--no-plots"], tmp_path, fast=False, module="sesemi.sweep_report")
    lines = report.stdout.splitlines()
    base = next(i for i, line in enumerate(lines) if line.startswith("baseline ("))
    assert lines[base].startswith("baseline (method=supervised, the sweep's fixed settings and budget): completed, ")
    assert f"stopped by max_time (00:00:00:{budget_s})" in lines[base] and "val/acc = " in lines[base]
    assert lines[base + 1] == f"  run dir: {sweep / 'baseline'}"
    assert lines[base + 2].startswith("  best trial - baseline: ")
    assert lines.index("") < base < next(i for i, line in enumerate(lines) if line.startswith("best: trial"))

    # The same command again: the study's budget is spent and the baseline completed; nothing runs again.
    again = run_cli([*TINY_DATA, *args], tmp_path, fast=False)
    assert "baseline: completed in an earlier command" in again.stdout + again.stderr
    assert len(list((sweep / "baseline").glob("events.out.tfevents.*"))) == 1
    # Another baseline for the same sweep dir is not run over the one the sweep has: a warning says how.
    other = [
        a if not a.startswith("hydra.sweeper.baseline=") else "hydra.sweeper.baseline={method:pseudo_label}"
        for a in args
    ]
    again = run_cli([*TINY_DATA, *other], tmp_path, fast=False)
    assert "baseline: this sweep's baseline ran with method=supervised, not this command's method=pseudo_label" in (
        again.stdout + again.stderr
    )
    assert len(list((sweep / "baseline").glob("events.out.tfevents.*"))) == 1


def test_a_bad_budget_or_baseline_is_one_error_before_anything_is_made(tmp_path: Path):
    for args, line in [
        (["hydra.sweeper.budget=10min"], "sesemi: error: hydra.sweeper.budget: is '10min'"),
        (["hydra.sweeper.baseline={methd:supervised}"], "sesemi: error: hydra.sweeper.baseline: methd=supervised:"),
    ]:
        proc = run_cli(["-m", "hparams_search=digits_fixmatch", *args], tmp_path, check=False)
        assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
        assert line in proc.stderr, proc.stderr[-2000:]
        assert "Traceback" not in proc.stderr
        assert not (tmp_path / "runs").exists()
