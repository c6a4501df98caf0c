"""Several objectives: Pareto dominance, the front, picking one trial from it, and pruning (Optuna has none).

Optuna's ``Trial.report`` and ``Trial.should_prune`` refuse multi-objective studies (one float per step, one
direction). A multi-objective trial therefore reports its vector of values at a step with :func:`report_vector`,
as the trial's user attribute ``sesemi:intermediate:<step>`` = ``[v1, v2, ...]`` (JSON, so any storage keeps it:
journal, SQLite, PostgreSQL). One attribute per step, as Optuna keeps its own intermediate values: each report is
one small record appended to a journal, not the whole history rewritten at every validation, and nothing is read
back before it is written. A step reported twice (a requeued trial repeating the steps after its checkpoint) keeps
the later vector: the one of the trajectory the trial is on.

:class:`ParetoPruner` stops a trial whose latest vector is dominated by those of at least ``min_dominators``
completed trials at the same step; :func:`should_prune` asks it for a running trial, whatever the number of
objectives. Of the completed trials' values, :func:`non_dominated` is the front, and :func:`closest_to_ideal` and
:func:`best_within` are two documented ways to pick one trial from it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import optuna
from optuna.pruners import BasePruner
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from sesemi.compat.optuna import frozen, trial_id

INTERMEDIATE = "sesemi:intermediate"

Direction = StudyDirection | str
Vector = Sequence[float]


def _signs(directions: Sequence[Direction]) -> list[float]:
    """+1 for an objective to maximise, -1 for one to minimise (``StudyDirection``, "maximize"/"max", ...)."""
    signs = []
    for d in directions:
        name = d.name.lower() if isinstance(d, StudyDirection) else str(d).lower()
        if name in ("maximize", "max"):
            signs.append(1.0)
        elif name in ("minimize", "min"):
            signs.append(-1.0)
        else:
            raise ValueError(f"unknown direction {d!r}: use maximize (max) or minimize (min)")
    return signs


def dominates(a: Vector, b: Vector, directions: Sequence[Direction]) -> bool:
    """Whether ``a`` is at least as good as ``b`` in every objective and better in one. A vector with a NaN
    dominates nothing and is dominated by every NaN-free vector."""
    signs = _signs(directions)
    if not len(a) == len(b) == len(signs):
        raise ValueError(f"vectors of {len(a)} and {len(b)} values for {len(signs)} objectives")
    if any(math.isnan(x) for x in a):
        return False
    if any(math.isnan(x) for x in b):
        return True
    better = [s * (x - y) for s, x, y in zip(signs, a, b)]
    return all(d >= 0 for d in better) and any(d > 0 for d in better)


def non_dominated(points: Sequence[Vector], directions: Sequence[Direction]) -> list[int]:
    """The indices of the points no other point dominates (the Pareto front), in their order; NaN points are
    never on it. Equal points are all on it."""
    return [
        i
        for i, p in enumerate(points)
        if not any(math.isnan(x) for x in p) and not any(dominates(q, p, directions) for q in points)
    ]


def closest_to_ideal(points: Sequence[Vector], directions: Sequence[Direction]) -> int:
    """The index of the front's point nearest (Euclidean) to the ideal point, each objective scaled to [0, 1] over
    the front (0: the front's best value, 1: its worst). A balanced compromise that needs no weights: the scaling
    makes units (accuracy, seconds, parameters) comparable. Ties: the first point."""
    front = non_dominated(points, directions)
    if not front:
        raise ValueError("no point without NaN to pick from")
    signs = _signs(directions)
    regret = {i: [0.0] * len(signs) for i in front}
    for k, s in enumerate(signs):
        values = [s * points[i][k] for i in front]
        best, spread = max(values), max(values) - min(values)
        for i, v in zip(front, values):
            regret[i][k] = (best - v) / spread if spread > 0 else 0.0
    return min(front, key=lambda i: math.hypot(*regret[i]))


def best_within(
    points: Sequence[Vector], directions: Sequence[Direction], primary: int, secondary: int, tolerance: float
) -> int:
    """The index of the front's point best in objective ``secondary`` among those within ``tolerance`` (in the
    objective's own units) of the best value of objective ``primary``; ties go to the better ``primary``. The
    researcher's usual question: "the cheapest trial within 0.5 points of the best accuracy" is
    ``best_within(values, ["maximize", "minimize"], primary=0, secondary=1, tolerance=0.005)``."""
    front = non_dominated(points, directions)
    if not front:
        raise ValueError("no point without NaN to pick from")
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    signs = _signs(directions)
    best = max(signs[primary] * points[i][primary] for i in front)
    gaps = {i: best - signs[primary] * points[i][primary] for i in front}
    near = [i for i in front if gaps[i] <= tolerance or math.isclose(gaps[i], tolerance)]  # 0.95 - 0.94 > 0.01
    return max(near, key=lambda i: (signs[secondary] * points[i][secondary], signs[primary] * points[i][primary]))


def report_vector(trial: optuna.Trial, step: int, values: Vector) -> None:
    """Record a running trial's objective values at ``step`` (one per direction of the study), for
    :class:`ParetoPruner` and the report; the multi-objective counterpart of ``trial.report(value, step)``."""
    n = len(trial.study.directions)
    if len(values) != n:
        raise ValueError(f"trial {trial.number}: {len(values)} values reported for a study of {n} objectives")
    if step < 0:
        raise ValueError(f"trial {trial.number}: step must be >= 0, got {step}")
    trial.set_user_attr(f"{INTERMEDIATE}:{int(step)}", [float(v) for v in values])


def intermediate_vectors(trial: FrozenTrial) -> dict[int, tuple[float, ...]]:
    """A trial's reported vectors by step, in step order. A trial that reported through Optuna's own
    ``Trial.report`` (a single-objective study) gives its values as vectors of one."""
    prefix = f"{INTERMEDIATE}:"
    vectors = {int(k[len(prefix) :]): tuple(v) for k, v in trial.user_attrs.items() if k.startswith(prefix)}
    if not vectors:
        vectors = {step: (value,) for step, value in trial.intermediate_values.items()}
    return dict(sorted(vectors.items()))


def vector_at(vectors: Mapping[int, tuple[float, ...]], step: int) -> tuple[float, ...] | None:
    """The vector at ``step``, or at the latest step reported before it; None when nothing was reported by then."""
    earlier = [s for s in vectors if s <= step]
    return vectors[max(earlier)] if earlier else None


class ParetoPruner(BasePruner):
    """Prunes a trial whose values at its latest reported step are dominated by those of at least
    ``min_dominators`` COMPLETE trials at the same step.

    A completed trial that did not report at exactly that step counts with its vector at the latest step it
    reported before it: it had trained no longer than the trial judged, so the comparison never favours it, and
    trials whose validations fall on different steps (another ``trainer.val_check_interval``) still compare. A
    trial is judged on its latest vector, not its best of each objective so far (the best of each would be a point
    it never reached); ``min_dominators`` > 1 is what keeps one lucky trial, or one noisy validation, from pruning.

    Like Optuna's ``MedianPruner``: nothing is pruned before ``n_startup_trials`` trials completed, nor at a step
    below ``n_warmup_steps``; a trial whose latest vector holds a NaN is pruned. With one objective (values
    reported by ``trial.report``) the rule reads "pruned when ``min_dominators`` completed trials were better at
    this step".
    """

    def __init__(self, n_startup_trials: int = 5, n_warmup_steps: int = 0, min_dominators: int = 2) -> None:
        if n_startup_trials < 0 or n_warmup_steps < 0:
            raise ValueError(
                f"n_startup_trials and n_warmup_steps must be >= 0, got {n_startup_trials}, {n_warmup_steps}"
            )
        if min_dominators < 1:
            raise ValueError(f"min_dominators must be >= 1, got {min_dominators}")
        self.n_startup_trials = n_startup_trials
        self.n_warmup_steps = n_warmup_steps
        self.min_dominators = min_dominators

    def dominators(self, study: optuna.Study, trial: FrozenTrial) -> list[int]:
        """The numbers of the COMPLETE trials whose values dominate ``trial``'s latest vector at its step (for a
        message saying why it was pruned)."""
        return _dominators(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)), trial, study.directions)

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        vectors = intermediate_vectors(trial)
        if not vectors or max(vectors) < self.n_warmup_steps:
            return False
        completed = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if len(completed) < max(self.n_startup_trials, 1):
            return False
        if any(math.isnan(v) for v in vectors[max(vectors)]):
            return True
        return len(_dominators(completed, trial, study.directions)) >= self.min_dominators


def _dominators(completed: Sequence[FrozenTrial], trial: FrozenTrial, directions: Sequence[Direction]) -> list[int]:
    vectors = intermediate_vectors(trial)
    if not vectors:
        return []
    step = max(vectors)
    found = []
    for other in completed:
        theirs = vector_at(intermediate_vectors(other), step)
        if theirs is not None and dominates(theirs, vectors[step], directions):
            found.append(other.number)
    return found


def should_prune(trial: optuna.Trial) -> bool:
    """``trial.should_prune()`` for a study of any number of objectives (Optuna's refuses several): the study's
    pruner judges the trial as the storage has it now, reported vectors included."""
    study = trial.study
    return study.pruner.prune(study, frozen(study, trial_id(trial)))
