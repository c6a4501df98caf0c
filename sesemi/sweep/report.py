"""``python -m sesemi.sweep_report <sweep dir | journal file | database URL> [--study NAME]``: what a sweep found.

Prints one row per trial (number, state, value, duration, parameters, run dir, and why a trial failed or was
pruned), the best trial with its checkpoint, and writes into ``<sweep dir>/report/`` (or ``--out``):

- ``trials.csv``: the table, with start/end times, worker, host and error;
- ``optimization_history.html``, ``param_importances.html``, ``parallel_coordinate.html`` and, when trials
  reported intermediate values (pruning), ``intermediate_values.html`` (Optuna's plotly figures; ``plotly.min.js``
  is written once next to them, so they open offline). A pruned trial appears in the history and the parallel
  coordinates with the best value it reported, marked as pruned; axes are labelled with the shortest unambiguous
  end of each parameter's key.

A database password is taken from ``$SESEMI_STORAGE_PASSWORD`` (or ``$PGPASSWORD``), as for the sweep.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from sesemi import rundir
from sesemi.errors import ConfigError, exit_with
from sesemi.sweep import budget, front
from sesemi.sweep import storage as storage_lib
from sesemi.sweep.plots import plot_study
from sesemi.sweep.repeats import SEEDS
from sesemi.sweep.study import COMMANDS, RUN_DIR, SWEEP, retried_numbers, retry_history
from sesemi.sweepdir import SWEEP_FILE, SweepDir


@dataclass
class Report:
    study: optuna.Study
    rows: list[dict[str, Any]]
    params: list[str]
    best: FrozenTrial | None
    best_checkpoint: str | None
    out_dir: Path
    sweep_dir: Path | None
    files: dict[str, Path]
    skipped: dict[str, str]


def open_study(target: str, study_name: str | None = None) -> tuple[optuna.Study, Path | None]:
    """The study of a sweep dir (via its sweep.json), a journal file or a database URL; and its sweep dir if known."""
    path = Path(target)
    sweep_dir = None
    spec: str | None = target
    if path.is_dir():
        info = SweepDir(path).read_sweep()
        if info is None:
            exit_with(f"{path} holds no {SWEEP_FILE}: not a sesemi sweep dir")
        sweep_dir = path.absolute()
        study_name = study_name or info["study_name"]
        spec = info.get("storage")
        if info.get("journal", True):
            # The journal's recorded path, or the sweep dir's own (a sweep dir that was moved or copied).
            local = SweepDir(sweep_dir).journal
            spec = str(local) if local.is_file() or not spec or not Path(spec).is_file() else spec
    elif not storage_lib.is_rdb(target) and not path.is_file():
        exit_with(f"{target} is neither a sweep dir, a journal file nor a database URL")
    storage = storage_lib.make_storage(spec, sweep_dir)
    if study_name is None:
        names = optuna.get_all_study_names(storage)
        if len(names) != 1:
            exit_with(f"the storage holds studies {names}: pick one with --study")
        study_name = names[0]
    study = optuna.load_study(study_name=study_name, storage=storage)
    if sweep_dir is None:
        recorded = study.user_attrs.get(SWEEP, {}).get("sweep_dir")
        if recorded and Path(recorded).is_dir():
            sweep_dir = Path(recorded)
    return study, sweep_dir


def _duration(t: FrozenTrial) -> float | None:
    if t.datetime_start and t.datetime_complete:
        return (t.datetime_complete - t.datetime_start).total_seconds()
    return None


def _note(t: FrozenTrial, retried: set[int], retried_by: dict[int, int]) -> str:
    notes = []
    if retry_history(t):
        notes.append(f"retry of trial {retry_history(t)[-1]}")
    if t.state == TrialState.PRUNED:
        last = max(t.intermediate_values) if t.intermediate_values else None
        notes.append(f"pruned at step {last}" if last is not None else "pruned")
    if t.state == TrialState.FAIL:
        notes.append(str(t.user_attrs.get("error", "failed")))
        if t.intermediate_values:  # not a result: where it was when it stopped
            step = max(t.intermediate_values)
            notes.append(f"last reported {t.intermediate_values[step]:.4g} at step {step}")
        if t.number in retried:
            notes.append(f"retried as trial {retried_by.get(t.number)}")
    return "; ".join(notes)


def _seeds(t: FrozenTrial) -> dict[str, Any]:
    return t.user_attrs.get(SEEDS) or {}


def checkpoint_of(run_dir: str | None) -> str | None:
    return rundir.best_checkpoint(run_dir) if run_dir else None


def build(target: str, study_name: str | None = None, out_dir: str | None = None, plots: bool = True) -> Report:
    study, sweep_dir = open_study(target, study_name)
    trials = study.get_trials(deepcopy=False)
    retried = retried_numbers(trials)
    retried_by = {retry_history(t)[-1]: t.number for t in trials if retry_history(t)}
    params: list[str] = []
    for t in trials:
        params += [p for p in t.params if p not in params]
    several = len(study.directions) > 1
    metrics = front.names(study) if several else []
    rows = []
    for t in trials:
        rows.append(
            {
                "trial": t.number,
                "state": t.state.name,
                **{m: (t.values[i] if t.values else None) for i, m in enumerate(metrics)},
                # A pruned trial's last reported value (where the pruner stopped it); a failed or lost one has none.
                "value": None
                if several
                else t.value
                if t.value is not None
                else (
                    t.intermediate_values[max(t.intermediate_values)]
                    if t.state == TrialState.PRUNED and t.intermediate_values
                    else None
                ),
                # With seed repeats: the value is their mean; their spread and each seed's value.
                "std": _seeds(t).get("std", [None])[0],
                "seeds": " ".join(f"{v[0]:.4g}" for v in _seeds(t).get("values", [])) or None,
                "duration_s": _duration(t),
                **{p: t.params.get(p) for p in params},
                "run_dir": t.user_attrs.get(RUN_DIR),
                "note": _note(t, retried, retried_by),
                "started": t.datetime_start.isoformat(timespec="seconds") if t.datetime_start else None,
                "completed": t.datetime_complete.isoformat(timespec="seconds") if t.datetime_complete else None,
                "worker": t.user_attrs.get("worker"),
                "slurm_job_id": t.user_attrs.get("slurm_job_id"),
            }
        )
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    best = front.picked(study) if several else study.best_trial if complete else None
    out = (
        Path(out_dir) if out_dir else (sweep_dir / "report" if sweep_dir else Path(f"sweep_report_{study.study_name}"))
    )
    out.mkdir(parents=True, exist_ok=True)
    files = {"csv": out / "trials.csv"}
    with open(files["csv"], "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["trial"])
        writer.writeheader()
        writer.writerows(rows)
    skipped: dict[str, str] = {}
    if plots and several:
        if complete:
            files[front.PLOT] = front.plot(study, out)
        else:
            skipped[front.PLOT] = "needs one complete trial"
    elif plots:
        files.update(plot_study(study, out, skipped))
    return Report(
        study,
        rows,
        params,
        best,
        checkpoint_of(best.user_attrs.get(RUN_DIR)) if best else None,
        out,
        sweep_dir,
        files,
        skipped,
    )


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return f"{value:.4g}"
    return str(value)


def _exact(value: Any) -> str:
    """A parameter as the trial used it: every digit of a float (``0.03534434615812953``), as an override reads it."""
    return repr(value) if isinstance(value, float) else str(value)


def retrain_command(study: optuna.Study, trial: FrozenTrial) -> str:
    """The shell command that trains ``trial``'s configuration again as a single run, from the folder its sweep was
    launched from (``cd`` there first when that is not this one): the trial's own command-line overrides (Hydra's
    record in its run dir: its parameters and the sweep's fixed settings, not the sweep's ``hydra.*`` ones), and
    ``run.id=<study>_trial<N>`` unless the sweep set a ``run.id``. A trial without a run dir: its parameters and the
    study's latest command's fixed settings."""
    import shlex

    import yaml

    run_dir = trial.user_attrs.get(RUN_DIR)
    overrides: list[str] = []
    launch_dir = None
    if run_dir:
        hydra_dir = Path(run_dir) / rundir.HYDRA_DIR
        try:
            overrides = [str(o) for o in yaml.safe_load((hydra_dir / "overrides.yaml").read_text()) or []]
            runtime = (yaml.safe_load((hydra_dir / "hydra.yaml").read_text()) or {}).get("hydra", {}).get("runtime")
            launch_dir = (runtime or {}).get("cwd")
        except (OSError, yaml.YAMLError, AttributeError):
            overrides = []
    if not overrides:
        commands = study.user_attrs.get(COMMANDS) or [{}]
        fixed = commands[-1].get("fixed") or {}
        overrides = [*(f"{k}={_exact(v)}" for k, v in trial.params.items()), *(f"{k}={v}" for k, v in fixed.items())]
    keep = [o for o in overrides if not o.lstrip("+~").startswith("hydra.")]
    if not any(o.lstrip("+~").split("=", 1)[0] == "run.id" for o in keep):
        keep.append(f"run.id={study.study_name}_trial{trial.number}")
    command = shlex.join(["python", "-m", "sesemi.train", *keep])
    if launch_dir and Path(launch_dir).resolve() != Path.cwd().resolve():
        command = f"cd {shlex.quote(launch_dir)} && {command}"
    return command


def render(report: Report) -> str:
    """The table and the summary, as printed."""
    base = report.sweep_dir
    several = len(report.study.directions) > 1
    values = front.names(report.study) if several else ["value"]
    headers = ["trial", "state", *values, "duration_s", *report.params, "run_dir", "note"]
    short = {
        p: p.split(".")[-1] if sum(q.split(".")[-1] == p.split(".")[-1] for q in report.params) == 1 else p
        for p in report.params
    }
    table = []
    for row in report.rows:
        cells = []
        for h in headers:
            value = row.get(h)
            if h == "run_dir" and value and base and Path(value).is_relative_to(base):
                value = str(Path(value).relative_to(base))
            if h == "duration_s" and value is not None:
                value = f"{value:.0f}s"
            if h == "value" and value is not None and row.get("std") is not None:  # seed repeats: mean ± std
                value = f"{value:.4g} ± {row['std']:.2g}"
            cells.append(_fmt(value))
        table.append(cells)
    titles = [short.get(h, h).replace("duration_s", "time") for h in headers]
    widths = [
        max(len(titles[i]), *(len(r[i]) for r in table)) if table else len(titles[i]) for i in range(len(headers))
    ]
    widths[-1] = max(len(titles[-1]), 4)
    lines = ["  ".join(t.ljust(w) for t, w in zip(titles, widths)).rstrip()]
    for r in table:
        lines.append("  ".join(c.ljust(w) if i < len(r) - 1 else c for i, (c, w) in enumerate(zip(r, widths))).rstrip())
    study = report.study
    info = study.user_attrs.get(SWEEP, {})
    counts: dict[str, int] = {}
    for row in report.rows:
        counts[row["state"]] = counts.get(row["state"], 0) + 1
    directions = "/".join(d.name.lower() for d in study.directions)
    head = (
        f"study {study.study_name} ({info.get('objective', 'value')}, {directions}): "
        f"{len(report.rows)} trials, " + ", ".join(f"{n} {s.lower()}" for s, n in sorted(counts.items()))
    )
    if report.sweep_dir:
        head += f"\nsweep dir: {report.sweep_dir}"
    out = [head, "", *lines, ""]
    best_value = None if several or report.best is None else report.best.value
    baseline = budget.report_lines(study, report.sweep_dir, best_value)  # hydra.sweeper.baseline's run
    out += [*baseline, ""] if baseline else []
    if several:
        out += [front.render(study, lambda t: _shown_dir(t.user_attrs.get(RUN_DIR), base)), ""]
    if report.best is not None:
        b = report.best
        shown = ", ".join(f"{m} = {v:.5g}" for m, v in zip(values, b.values)) if several else None
        out.append(
            f"picked: trial {b.number}, {shown}"
            if several
            else f"best: trial {b.number}, {info.get('objective', 'value')} = {b.value:.5g}"
        )
        out.append("  params: " + " ".join(f"{k}={_exact(v)}" for k, v in b.params.items()))
        out.append(f"  run dir: {b.user_attrs.get(RUN_DIR)}")
        out.append(f"  checkpoint: {report.best_checkpoint or '-'}")
        out.append(f"  train it again: {retrain_command(study, b)}")
    else:
        out.append("best: no complete trial yet")
    out.append(f"written: {', '.join(str(p) for p in report.files.values())}")
    for name, why in report.skipped.items():
        out.append(f"  no {name} plot: {why}")
    return "\n".join(out)


def _shown_dir(run_dir: str | None, base: Path | None) -> str | None:
    if run_dir and base and Path(run_dir).is_relative_to(base):
        return str(Path(run_dir).relative_to(base))
    return run_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sesemi.sweep_report", description=__doc__.split("\n\n")[0])
    parser.add_argument("target", help="a sweep dir, a journal file or a database URL (password from the environment)")
    parser.add_argument("--study", help="the study name (needed when the storage holds several)")
    parser.add_argument("--out", help="where to write trials.csv and the plots (default: <sweep dir>/report)")
    parser.add_argument("--no-plots", action="store_true", help="only the table and the CSV")
    args = parser.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        report = build(args.target, args.study, args.out, plots=not args.no_plots)
    except ConfigError as err:  # e.g. the database refused the connection: no password in the environment
        exit_with(err)
    print(render(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
