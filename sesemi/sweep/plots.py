"""The figures of a sweep report of one objective (Optuna's plotly figures, written next to each other so that one
``plotly.min.js`` serves them offline): the optimization history, parameter importances, parallel coordinates and,
when trials reported at their validations, the intermediate values. A pruned trial appears with the best value it
reported, marked as pruned; axes carry the shortest unambiguous end of each parameter's key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from sesemi.sweep.repeats import SEEDS
from sesemi.sweep.study import SWEEP

PLOTS = ("optimization_history", "param_importances", "parallel_coordinate", "intermediate_values")


def best_reported(t: FrozenTrial, maximize: bool) -> float | None:
    """The best value a trial reported at its validations (a pruned trial's best, for the plots)."""
    if not t.intermediate_values:
        return None
    return (max if maximize else min)(t.intermediate_values.values())


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
    spread = [(t.user_attrs.get(SEEDS) or {}).get("std", [0.0])[0] for t in complete]  # seed repeats: mean ± std
    fig.add_scatter(
        x=[t.number for t in complete],
        y=[t.value for t in complete],
        error_y={"type": "data", "array": spread, "visible": any(spread)},
        mode="markers",
        name="complete (mean ± std over its seeds)" if any(spread) else "complete",
    )
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


def plot_study(study: optuna.Study, out: Path, skipped: dict[str, str]) -> dict[str, Path]:
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
