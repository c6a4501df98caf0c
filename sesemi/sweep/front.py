"""The report of a study of several objectives: its Pareto front (a table and a plot) and one trial picked from it.

The front is the completed trials no other completed trial beats in every objective; a study of several objectives
has no single best trial, so the report also names the trial closest to the ideal point (each objective scaled to
[0, 1] over the front, the best of each in one corner: :func:`sesemi.sweep.pareto.closest_to_ideal`) and says how to
pick another by a rule of one's own (:func:`sesemi.sweep.pareto.best_within`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from sesemi.sweep import pareto

PLOT = "pareto_front"


def names(study: optuna.Study) -> list[str]:
    """The objectives' metric names (as the sweep set them), else ``value 0``, ``value 1``..."""
    return list(study.metric_names or [f"value {i}" for i in range(len(study.directions))])


def front(study: optuna.Study) -> list[FrozenTrial]:
    """The completed trials on the Pareto front, by trial number."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    on_front = pareto.non_dominated([tuple(t.values) for t in complete], study.directions)
    return sorted((complete[i] for i in on_front), key=lambda t: t.number)


def picked(study: optuna.Study) -> FrozenTrial | None:
    """The trial of the front closest to the ideal point (None before any trial completed)."""
    trials = front(study)
    if not trials:
        return None
    return trials[pareto.closest_to_ideal([tuple(t.values) for t in trials], study.directions)]


def plot(study: optuna.Study, out: Path) -> Path:
    """Optuna's Pareto-front figure (the front marked among all completed trials), as ``pareto_front.html``."""
    import optuna.visualization as vis

    fig = vis.plot_pareto_front(study, target_names=names(study))
    path = out / f"{PLOT}.html"
    fig.write_html(str(path), include_plotlyjs="directory")
    return path


def render(study: optuna.Study, run_dir_of: Any) -> str:
    """The front as a table, the picked trial, and how to pick another."""
    metrics = names(study)
    directions = [d.name.lower() for d in study.directions]
    trials = front(study)
    lines = [f"Pareto front ({', '.join(f'{m} {d}' for m, d in zip(metrics, directions))}): {len(trials)} trial(s)"]
    header = ["trial", *metrics, "run_dir"]
    rows = [[str(t.number), *(f"{v:.4g}" for v in t.values), str(run_dir_of(t) or "-")] for t in trials]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines += ["  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header, *rows]]
    choice = picked(study)
    if choice is not None:
        values = ", ".join(f"{m} = {v:.4g}" for m, v in zip(metrics, choice.values))
        lines.append(f"closest to the ideal point: trial {choice.number} ({values})")
        lines.append(
            "  another rule: sesemi.sweep.pareto.best_within(values, directions, primary, secondary, tolerance), "
            f"e.g. the best {metrics[-1]} within 0.005 of the best {metrics[0]}"
        )
    return "\n".join(lines)
