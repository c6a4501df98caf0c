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
from sesemi.sweep import storage as storage_lib
from sesemi.sweep.study import RUN_DIR, SWEEP, retried_numbers, retry_history
from sesemi.sweepdir import SWEEP_FILE, SweepDir

PLOTS = ("optimization_history", "param_importances", "parallel_coordinate", "intermediate_values")


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


def short_names(keys: list[str]) -> dict[str, str]:
    """Each dotted key's shortest end that no other key shares (``optimizer.lr`` -> ``lr``)."""
    names = {}
    for key in keys:
        parts = key.split(".")
        for n in range(1, len(parts) + 1):
            end = ".".join(parts[-n:])
            if sum(k == end or k.endswith("." + end) for k in keys) == 1:
                names[key] = end
                break
        else:
            names[key] = key
    return names


def best_reported(t: FrozenTrial, maximize: bool) -> float | None:
    """The best value a trial reported at its validations (a pruned trial's best, for the plots)."""
    if not t.intermediate_values:
        return None
    return (max if maximize else min)(t.intermediate_values.values())


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
    rows = []
    for t in trials:
        rows.append(
            {
                "trial": t.number,
                "state": t.state.name,
                # A pruned trial's last reported value (where the pruner stopped it); a failed or lost one has none.
                "value": t.value
                if t.value is not None
                else (
                    t.intermediate_values[max(t.intermediate_values)]
                    if t.state == TrialState.PRUNED and t.intermediate_values
                    else None
                ),
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
    best = study.best_trial if complete else None
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
    if plots:
        files.update(_plots(study, out, skipped))
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


def _with_pruned(study: optuna.Study) -> tuple[optuna.Study, str]:
    """An in-memory copy of the finished trials, pruned ones COMPLETE with their best reported value and every trial
    with a ``state`` parameter (complete / pruned), for the figures that plot complete trials only."""
    maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
    copy = optuna.create_study(direction=study.direction)
    state = "state"
    while any(state in t.params for t in study.get_trials(deepcopy=False)):
        state = "_" + state
    kinds = optuna.distributions.CategoricalDistribution(["complete", "pruned"])
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
        value = t.value if t.state == TrialState.COMPLETE else best_reported(t, maximize)
        if value is None:
            continue
        copy.add_trial(
            optuna.trial.create_trial(
                params={**t.params, state: t.state.name.lower()},
                distributions={**t.distributions, state: kinds},
                value=value,
            )
        )
    return copy, state


def _history(study: optuna.Study, objective: str) -> Any:
    import plotly.graph_objects as go

    maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    pruned = [
        (t.number, best_reported(t, maximize))
        for t in study.get_trials(deepcopy=False, states=(TrialState.PRUNED,))
        if t.intermediate_values
    ]
    fig = go.Figure()
    fig.add_scatter(x=[t.number for t in complete], y=[t.value for t in complete], mode="markers", name="complete")
    if pruned:
        fig.add_scatter(
            x=[n for n, _ in pruned],
            y=[v for _, v in pruned],
            mode="markers",
            marker={"symbol": "x", "color": "#aaa"},
            name="pruned (its best reported value)",
        )
    best, line = None, []
    for t in complete:
        best = t.value if best is None else (max if maximize else min)(best, t.value)
        line.append(best)
    fig.add_scatter(x=[t.number for t in complete], y=line, mode="lines", name="best complete so far")
    fig.update_layout(
        title=f"Optimization history ({objective}, {study.direction.name.lower()})",
        xaxis_title="trial",
        yaxis_title=objective,
    )
    return fig


def _plots(study: optuna.Study, out: Path, skipped: dict[str, str]) -> dict[str, Path]:
    import optuna.visualization as vis

    objective = study.user_attrs.get(SWEEP, {}).get("objective", "value")
    written = {}
    plotted, _ = _with_pruned(study)
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    for name in PLOTS:
        if name == "intermediate_values" and not any(t.intermediate_values for t in study.get_trials(deepcopy=False)):
            skipped[name] = "no trial reported intermediate values"
            continue
        if name == "param_importances" and len(complete) < 2:
            skipped[name] = "needs two complete trials"
            continue
        if name in ("optimization_history", "parallel_coordinate") and not plotted.trials:
            skipped[name] = "needs one complete or pruned trial"
            continue
        try:
            if name == "optimization_history":
                fig = _history(study, objective)
            elif name == "parallel_coordinate":
                fig = vis.plot_parallel_coordinate(plotted, target_name=objective)
                # Optuna cuts labels to 20 characters (two keys under method.loss_heads look alike): its axes are
                # the objective, then the parameters in sorted order.
                keys = sorted({p for t in plotted.trials for p in t.params})
                names = short_names(keys)
                labels = [objective, *(names[k] for k in keys)]
                fig.update_xaxes(ticktext=labels)
                for trace in fig.data:  # the hover texts: one [label, value] per axis
                    rows = trace.customdata
                    if rows is not None and len(rows) == len(labels) and all(len(row) == 2 for row in rows):
                        trace.customdata = [[label, row[1]] for label, row in zip(labels, trace.customdata)]
                fig.update_layout(title=f"Parallel coordinates (pruned trials: their best reported {objective})")
            elif name == "intermediate_values":
                fig = vis.plot_intermediate_values(study)
                fig.update_layout(showlegend=True, xaxis_title="step", yaxis_title=objective)
            else:
                fig = getattr(vis, f"plot_{name}")(study, target_name=objective)
        except Exception as err:  # noqa: BLE001 - e.g. importances of a parameter that never varied
            skipped[name] = f"{type(err).__name__}: {err}"
            continue
        path = out / f"{name}.html"
        fig.write_html(str(path), include_plotlyjs="directory")
        written[name] = path
    return written


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return f"{value:.4g}"
    return str(value)


def render(report: Report) -> str:
    """The table and the summary, as printed."""
    base = report.sweep_dir
    headers = ["trial", "state", "value", "duration_s", *report.params, "run_dir", "note"]
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
    head = (
        f"study {study.study_name} ({info.get('objective', 'value')}, {study.direction.name.lower()}): "
        f"{len(report.rows)} trials, " + ", ".join(f"{n} {s.lower()}" for s, n in sorted(counts.items()))
    )
    if report.sweep_dir:
        head += f"\nsweep dir: {report.sweep_dir}"
    out = [head, "", *lines, ""]
    if report.best is not None:
        b = report.best
        out.append(f"best: trial {b.number}, {info.get('objective', 'value')} = {b.value:.5g}")
        out.append("  params: " + ", ".join(f"{k}={_fmt(v)}" for k, v in b.params.items()))
        out.append(f"  run dir: {b.user_attrs.get(RUN_DIR)}")
        out.append(f"  checkpoint: {report.best_checkpoint or '-'}")
    else:
        out.append("best: no complete trial yet")
    out.append(f"written: {', '.join(str(p) for p in report.files.values())}")
    for name, why in report.skipped.items():
        out.append(f"  no {name} plot: {why}")
    return "\n".join(out)


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
