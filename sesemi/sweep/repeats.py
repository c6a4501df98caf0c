"""Seed repeats (``hydra.sweeper.repeats: N``): every parameter set runs with N seeds, as N runs, and the trial is
their mean.

Repeat ``k`` of trial ``T`` is a run of its own, ``trial_TTTT/seed_<s>`` with ``run.seed = s`` (the sweep's seed
plus ``k``; ``hydra.sweeper.repeat_key`` names another key). A synchronous sweep launches a trial's repeats as jobs
of the same batch (in parallel where the launcher can); an asynchronous worker runs them one after the other.
Each repeat records what it reached in the trial's user attributes (one small record per validation and one at its
end: journal and databases alike), so whichever process finishes a step or the trial last sees them all:

- **pruning compares means at equal steps**: at each validation a repeat records its value(s); once every repeat
  has reached that step, their mean is the trial's intermediate value there and the pruner judges it; a pruned
  trial's other repeats stop at their next validation;
- **the trial's value is the mean** of its repeats' objectives, told by the repeat that ends last; the study keeps
  the standard deviation and each seed's value (``sesemi:seeds``), which the report shows as mean ± std.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna

from sesemi.compat import optuna as compat
from sesemi.rundir import last_checkpoint
from sesemi.sweepdir import trial_subdir

REPEAT_ENV = "SESEMI_SWEEP_REPEAT"
SEEDS = "sesemi:seeds"  # {"seeds": [...], "values": [[...], ...], "mean": [...], "std": [...]}
PRUNED = "sesemi:pruned_repeats"  # why the pruner stopped the trial (its other repeats stop too)


def _step_key(repeat: int, step: int) -> str:
    return f"sesemi:repeat:{repeat}:{step}"


def _end_key(repeat: int) -> str:
    return f"sesemi:repeat:{repeat}:end"


def seeds(base: int, repeats: int) -> list[int]:
    return [int(base) + k for k in range(repeats)]


def subdir(number: int, seed: int) -> str:
    """Repeat ``seed`` of trial ``number``: its run dir below the sweep dir."""
    return f"{trial_subdir(number)}/seed_{seed}"


def overrides(trial_overrides: Sequence[str], number: int, seed: int, key: str) -> list[str]:
    """A repeat's job overrides: the trial's, with its seed and its own run dir."""
    kept = [o for o in trial_overrides if not o.startswith(("hydra.sweep.subdir=", f"{key}="))]
    return [*kept, f"{key}={seed}", f"hydra.sweep.subdir={subdir(number, seed)}"]


def jobs(
    trial: optuna.trial.FrozenTrial, trial_overrides: Sequence[str], repeats: int, base: int, key: str, sweep_dir: str
) -> list[tuple[int | None, list[str]]]:
    """What is left to run of a trial: ``(repeat, overrides)`` per run; one run ``(None, overrides)`` without
    repeats. A seed that ended is not run again; one stopped after a checkpoint continues from it."""
    if repeats == 1:
        return [(None, list(trial_overrides))]
    ended = set(done(trial, repeats))
    left = []
    for k, seed in enumerate(seeds(base, repeats)):
        if k in ended:
            continue
        run_dir = Path(sweep_dir) / subdir(trial.number, seed)
        resume = [f"run.resume={run_dir}"] if last_checkpoint(run_dir).is_file() else []
        left.append((k, [*overrides(trial_overrides, trial.number, seed, key), *resume]))
    return left


def done(trial: optuna.trial.FrozenTrial, repeats: int) -> list[int]:
    """The repeats of ``trial`` that ended (completed or stopped by the pruner)."""
    return [k for k in range(repeats) if _end_key(k) in trial.user_attrs]


def report_step(
    study: optuna.Study, trial_id: int, repeat: int, repeats: int, step: int, values: Sequence[float]
) -> list[float] | None:
    """Record repeat ``repeat``'s values at ``step``; the mean over the repeats once all have reached the step."""
    compat.set_trial_attr(study, trial_id, _step_key(repeat, step), list(values))
    attrs = compat.frozen(study, trial_id).user_attrs
    reached = [attrs.get(_step_key(k, step)) for k in range(repeats)]
    if any(v is None for v in reached):
        return None
    return [statistics.fmean(column) for column in zip(*reached)]


def record_end(
    study: optuna.Study, trial_id: int, repeat: int, repeats: int, values: Sequence[float], base_seed: int
) -> dict[str, Any] | None:
    """Record repeat ``repeat``'s final values; the trial's statistics once every repeat ended (else None)."""
    compat.set_trial_attr(study, trial_id, _end_key(repeat), list(values))
    attrs = compat.frozen(study, trial_id).user_attrs
    ends = [attrs.get(_end_key(k)) for k in range(repeats)]
    if any(v is None for v in ends):
        return None
    columns = list(zip(*ends))
    stats = {
        "seeds": seeds(base_seed, repeats),
        "values": ends,
        "mean": [statistics.fmean(c) for c in columns],
        "std": [statistics.stdev(c) if len(c) > 1 else 0.0 for c in columns],
    }
    compat.set_trial_attr(study, trial_id, SEEDS, stats)
    return stats


def pruned(study: optuna.Study, trial_id: int) -> str | None:
    """Why the pruner stopped the trial (one of its repeats asked it), if it did."""
    return compat.frozen(study, trial_id).user_attrs.get(PRUNED)


def mark_pruned(study: optuna.Study, trial_id: int, why: str) -> None:
    compat.set_trial_attr(study, trial_id, PRUNED, why)
