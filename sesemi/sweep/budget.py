"""Budget-matched trials and a baseline beside them: ``hydra.sweeper.budget`` and ``hydra.sweeper.baseline``.

``hydra.sweeper.budget: 00:00:10:00`` (``trainer.max_time``'s format, ``DD:HH:MM:SS``) gives every trial the same
wall-clock budget and a learning-rate schedule that ends when it is spent: it adds ``trainer.max_time=<budget>`` and
the time-based form of the config's schedule (``lr_scheduler=cosine`` -> ``cosine_time``, ``fixmatch_cosine`` ->
``fixmatch_cosine_time``, a schedule of the user's own ``X`` -> ``X_time``; ``constant`` stays) to the sweep's fixed
overrides, so trials of different speed are compared at the same cost (:class:`sesemi.schedules.BudgetSchedule`).
It is part of what the study's trials train: another budget is another study (``sesemi.sweep.opening``).

``hydra.sweeper.baseline: {method: supervised}`` (overrides: a mapping, a list or a string) adds one run to the
sweep: the sweep's fixed settings (and its budget) with these overrides on top, none of the swept parameters, in
``<sweep dir>/baseline``. It runs once, before the trials (a resumed sweep keeps a completed one), through the
sweep's launcher, and the report shows it under the trials (:func:`report_lines`).
"""

from __future__ import annotations

import logging
import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from sesemi.errors import ConfigError
from sesemi.rundir import RunState, last_checkpoint, read_metrics, read_status
from sesemi.sweepdir import BASELINE_DIR

log = logging.getLogger("sesemi.sweep")

BASELINE = "sesemi:baseline"  # the study's user attribute: the baseline's overrides and budget
SCHEDULE_KEYS = ("lr_scheduler", "trainer.max_time")
STEADY = ("constant",)  # schedules without a decay: the budget only stops the run


def time_form(schedule: str) -> str:
    """The schedule that decays over ``trainer.max_time`` as ``schedule`` decays over ``trainer.max_steps``."""
    if schedule.endswith("_time") or schedule in STEADY:
        return schedule
    return f"{schedule}_time"


def check_budget(budget: Any) -> str:
    """``hydra.sweeper.budget`` as the ``trainer.max_time`` override's value; a :class:`ConfigError` when Lightning
    cannot read it."""
    from sesemi.schedules import budget_seconds

    text = str(budget).strip()
    try:
        seconds = budget_seconds(text)
    except Exception as err:  # noqa: BLE001 - Lightning's own parse error: say what is expected
        raise ConfigError(
            "hydra.sweeper.budget", f"is {budget!r} ({err})", "write it as trainer.max_time is: DD:HH:MM:SS"
        ) from None
    if not seconds or seconds <= 0:
        raise ConfigError("hydra.sweeper.budget", f"is {budget!r}, no time at all", "give a time, e.g. 00:00:10:00")
    return text


def budget_overrides(budget: str, schedule: str) -> list[str]:
    """The fixed overrides that give every trial ``budget``: its time limit and the time form of ``schedule``."""
    return [f"trainer.max_time='{budget}'", f"lr_scheduler={time_form(schedule)}"]


def with_budget(arguments: Sequence[str], params: Mapping[str, Any] | None, budget: Any, schedule: str) -> list[str]:
    """The sweep command's ``arguments`` (its fixed overrides and search space on the command line) with the budget
    (:func:`budget_overrides`) in place of their own schedule; ``schedule``: the config's ``lr_scheduler`` choice,
    or the command line's. A command that sets ``trainer.max_time`` itself, or sweeps the schedule, is refused."""
    text = check_budget(budget)
    keys = {a.split("=", 1)[0].lstrip("+~"): a for a in arguments}
    if "trainer.max_time" in keys:
        raise ConfigError(
            "hydra.sweeper.budget",
            f"sets trainer.max_time, and so does the command line ({keys['trainer.max_time']})",
            "drop one of them",
        )
    given = keys.get("lr_scheduler", "").split("=", 1)[-1]
    if "lr_scheduler" in (params or {}) or "," in given or "(" in given:
        raise ConfigError(
            "hydra.sweeper.budget",
            "chooses the time-based form of the sweep's one learning-rate schedule, but the schedule is swept or "
            "set in hydra.sweeper.params",
            "drop lr_scheduler from the search space; set the schedule for every trial on the command line "
            "(lr_scheduler=fixmatch_cosine: the budget makes it fixmatch_cosine_time)",
        )
    kept = [a for a in arguments if a.split("=", 1)[0].lstrip("+~") not in SCHEDULE_KEYS]
    return [*kept, *budget_overrides(text, given or schedule)]


def check_schedule(hydra_context: Any, config: DictConfig, overrides: Sequence[str], schedule: str) -> None:
    """Compose once with the budget's schedule: a schedule without a time-based form is one error naming it."""
    from sesemi.compat.hydra import load_sweep_config

    try:
        load_sweep_config(hydra_context, config, list(overrides))
    except Exception as err:  # noqa: BLE001 - which override failed is in the text
        if time_form(schedule) not in str(err):
            return  # not the schedule's: the search space's check names it (sesemi.sweep.space.check)
        raise ConfigError(
            "hydra.sweeper.budget",
            f"needs a time-based form of lr_scheduler={schedule} (lr_scheduler={time_form(schedule)}), and there "
            "is none",
            "use a schedule that has one (lr_scheduler=cosine or fixmatch_cosine), or write "
            f"configs/lr_scheduler/{time_form(schedule)}.yaml (sesemi.schedules.BudgetSchedule)",
        ) from None


def schedule_of(config: DictConfig) -> str:
    """The config's ``lr_scheduler`` choice (the command line's included)."""
    return str(OmegaConf.select(config, "hydra.runtime.choices.lr_scheduler", default="cosine"))


# ------------------------------------------------------------------------------------------------- the baseline
def _value(value: Any) -> str:
    if value is None:
        return "null"
    return str(value).lower() if isinstance(value, bool) else str(value)


def baseline_list(baseline: Any) -> list[str]:
    """``hydra.sweeper.baseline`` as a list of overrides: a mapping (``{method: supervised}``, on the command line
    ``hydra.sweeper.baseline={method:supervised}``), a list of overrides, or a string of them (split as a shell
    splits it)."""
    if baseline is None or baseline == "" or baseline == [] or baseline == {}:
        return []
    if isinstance(baseline, Mapping):
        return [f"{k}={_value(v)}" for k, v in baseline.items()]
    items = shlex.split(baseline) if isinstance(baseline, str) else [str(o) for o in baseline]
    bad = [o for o in items if "=" not in o]
    if bad:
        raise ConfigError(
            "hydra.sweeper.baseline", f"holds {bad[0]!r}, no override", "give key=value overrides: method=supervised"
        )
    return items


def baseline_overrides(
    baseline: Sequence[str], fixed_params: Mapping[str, Any], fixed_overrides: Sequence[str]
) -> list[str]:
    """The baseline run's overrides: the sweep's fixed parameters and overrides (its budget among them), each key
    the baseline sets replaced by the baseline's value, and its run dir ``<sweep dir>/baseline``."""
    own = {o.split("=", 1)[0].lstrip("+~") for o in baseline}
    fixed = [f"{k}={v}" for k, v in fixed_params.items()] + list(fixed_overrides)
    kept = [o for o in fixed if o.split("=", 1)[0].lstrip("+~") not in own]
    return [*kept, *baseline, f"hydra.sweep.subdir={BASELINE_DIR}"]


def run_baseline(study: Any, launch: Any, sweep_dir: str | Path, overrides: list[str], shown: list[str]) -> None:
    """Run the baseline through the sweep's ``launch`` (:class:`sesemi.sweep.launching.SweepLaunch`) unless it
    completed in an earlier command of this sweep; one that stopped continues from its checkpoint. ``shown``: the
    baseline's own overrides, recorded in the study for the report."""
    run_dir = Path(sweep_dir) / BASELINE_DIR
    earlier = (study.user_attrs.get(BASELINE) or {}).get("overrides")
    status = read_status(run_dir) or {}
    if earlier is not None and earlier != shown and status:
        log.warning(
            "baseline: this sweep's baseline ran with %s, not this command's %s: it is kept and the new one not run "
            "(remove %s to run it)",
            " ".join(earlier),
            " ".join(shown),
            run_dir,
        )
        return
    study.set_user_attr(BASELINE, {"overrides": shown, "run_dir": str(run_dir)})
    if status.get("state") == RunState.COMPLETED:
        log.info("baseline: completed in an earlier command (%s)", run_dir)
        return
    if last_checkpoint(run_dir).is_file():
        overrides = [*overrides, f"run.resume={run_dir}"]
    log.info("baseline: %s in %s, before the trials", " ".join(shown), run_dir)
    errors = launch([overrides], -1)  # job -1: the trials (and workers) are 0, 1, ...; detached: no result
    error = errors[0] if errors else None
    if error:
        log.warning("baseline: %s (the sweep goes on; its run dir: %s)", error, run_dir)


def report_lines(study: Any, sweep_dir: Path | None, best_value: float | None) -> list[str]:
    """The report's baseline section (none for a sweep without one): its state, objective and time, and how the
    best trial compares."""
    recorded = study.user_attrs.get(BASELINE)
    if not recorded:
        return []
    run_dir = Path(recorded["run_dir"])
    if sweep_dir is not None and not run_dir.is_dir():
        run_dir = Path(sweep_dir) / BASELINE_DIR  # a sweep dir that was moved or copied
    status = read_status(run_dir) or {}
    metrics = read_metrics(run_dir) or {}
    objective = metrics.get("objective") or {}
    name, value = objective.get("name", "value"), objective.get("value")
    state = str(status.get("state") or "not started")
    shown = " ".join(recorded.get("overrides") or [])
    line = f"baseline ({shown}, the sweep's fixed settings and budget): {state}"
    if value is not None:
        line += f", {name} = {value:.5g}"
    if metrics.get("stopped_by"):
        line += f", stopped by {metrics['stopped_by']}"
    lines = [line, f"  run dir: {run_dir}"]
    if value is not None and best_value is not None:
        lines.append(f"  best trial - baseline: {best_value - value:+.4g}")
    return lines


# ----------------------------------------------------------------------------------------- the sweeper's calls
def prepare(
    arguments: Sequence[str],
    *,
    budget: Any,
    baseline: Any,
    params: Mapping[str, Any] | None,
    hydra_context: Any,
    config: DictConfig,
) -> list[str]:
    """Before the study is touched: the command's arguments with the budget (:func:`with_budget`), and the budget's
    schedule and the baseline composed once; a bad one is a :class:`ConfigError`, nothing created."""
    from sesemi.compat.hydra import load_sweep_config
    from sesemi.sweep import space

    arguments = list(arguments)
    if budget is not None:
        arguments = with_budget(arguments, params, budget, schedule_of(config))
        _, fixed_params, fixed = space.parse(params, arguments)
        check_schedule(
            hydra_context, config, [f"{k}={v}" for k, v in fixed_params.items()] + fixed, schedule_of(config)
        )
    own = baseline_list(baseline)
    if own:
        _, fixed_params, fixed = space.parse(params, arguments)
        try:
            load_sweep_config(hydra_context, config, baseline_overrides(own, fixed_params, fixed))
        except Exception as err:  # noqa: BLE001 - Hydra's composition error names the override
            problem = " ".join(str(err).split())[:300]
            raise ConfigError(
                "hydra.sweeper.baseline", f"{' '.join(own)}: {problem}", "correct the baseline's overrides"
            ) from None
    return arguments


def launch_baseline(study: Any, settings: Any, launch: Any, baseline: Any) -> None:
    """Run the sweep's baseline (none without ``hydra.sweeper.baseline``), see :func:`run_baseline`;
    ``settings``: the sweep's :class:`~sesemi.sweep.settings.SweepSettings`."""
    own = baseline_list(baseline)
    if own:
        overrides = baseline_overrides(own, settings.fixed_params, settings.fixed_overrides)
        run_baseline(study, launch, settings.sweep_dir, overrides, own)
