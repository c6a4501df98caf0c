"""P3 asynchronous sweeps: wall time to the best value, synchronous batches vs asynchronous workers vs + pruning.

The same trial budget over the same search space, run three ways through the real CLI
(``python -m sesemi.train -m hparams_search=...``), each time with 4 trials in flight on this machine:

- ``sync``: ``hydra/sweeper=optuna_sync hydra.sweeper.n_jobs=4``: batches of 4 local processes (one per trial);
  a batch ends with its slowest trial;
- ``async``: ``hydra/sweeper=optuna_async hydra.sweeper.workers=4 hydra/sweeper/pruner=none``: 4 workers, each
  taking the next trial as soon as its last one ended;
- ``async_prune``: the same with ``hydra/sweeper/pruner=median`` (a trial below the median of the finished trials at
  the same step stops early).

Trials have unequal lengths: the search space holds the network width and the unlabeled batch size, so a step
costs up to about 7x more in one trial than in another (all trials train the same 48 steps). So that the three
sweeps compare like with like, the trials are not sampled during the sweeps: the budget is
drawn from the search space with a seeded random sampler and enqueued in the same order in all three
(``hydra.sweeper.enqueue_trials``), so every sweep runs the same configurations and the same best configuration
exists in each (pruning may stop it; the table says so). Where the best configuration falls in the order decides
much of the time to reach it, so the benchmark repeats everything for several draws (``--seeds``) and reports
medians. Time to best = from launching the command to the moment a
trial with the best value of the synchronous sweep (or better) completed, as the study's storage records it.

    python benchmarks/sweep_async.py     # the tables in docs/benchmarks.md (16 trials, 4 at a time, 4 draws)
    python benchmarks/sweep_async.py --trials 8 --seeds 0 --keep /tmp/p3   # smaller; keep the sweep dirs
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    RESULTS,
    command_line,
    load,
    machine,
    markdown_table,
    median,
    reproduce,
    write_json,
    write_section,
)

SECTION = "sweep_async"
HEADING = "Sweeps P3: asynchronous sweeps with pruning (time to best)"

SEARCH_SPACE = {
    "optimizer.lr": "tag(log, interval(0.01, 0.3))",
    "method.loss_heads.fixmatch.threshold": "interval(0.7, 0.95)",
    # Unequal lengths the realistic way, through compute: a wider network and a bigger unlabeled batch cost more
    # per step (about 7x from the cheapest to the dearest here) and tend to score better.
    "model.backbone.width": "choice(16, 32, 64, 128)",
    "data.unlabeled_batch_size": "choice(32, 64, 128)",
}
# Small FixMatch trials on the embedded digits (4 labels per class, so that the values spread), 48 steps each (the
# same schedule for all: the pruner compares trials at equal steps), validated (= reported) every 8 steps.
TRIAL = [
    "trainer.max_steps=48",
    "trainer.val_check_interval=8",
    "trainer.log_every_n_steps=8",
    "data.labels_per_class=4",
    "data.labeled_batch_size=16",
    "data.num_workers=0",
    "callbacks.progress_bar=null",
    "callbacks.images=null",
    "method.ema.evaluate=false",
]
MODES = {
    "sync": ["hydra/sweeper=optuna_sync"],
    "async": ["hydra/sweeper=optuna_async", "hydra/sweeper/pruner=none"],
    "async_prune": [
        "hydra/sweeper=optuna_async",
        "hydra/sweeper/pruner=median",
        "hydra.sweeper.pruner.n_startup_trials=4",
        "hydra.sweeper.pruner.n_warmup_steps=8",
    ],
}


def draw_trials(n: int, seed: int) -> list[dict[str, Any]]:
    """The budget: n configurations from the search space, drawn once (seeded), as Optuna parameter dicts."""
    import optuna

    from sesemi.sweep.grammar import search_space as create_params_from_overrides

    distributions, _, _ = create_params_from_overrides([f"{k}={v}" for k, v in SEARCH_SPACE.items()])
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    trials = []
    for _ in range(n):
        trial = study.ask(distributions)
        trials.append(dict(trial.params))
        study.tell(trial, 0.0)
    return trials


def write_search_config(workdir: Path, trials: list[dict[str, Any]], parallel: int, name: str) -> None:
    """The sweep as a user's own hparams_search config (the workspace's configs/ extends the built-in groups)."""
    import yaml

    config = {
        "defaults": [{"override /hydra/sweeper": "optuna_sync"}],
        "run": {"objective": "val/acc", "objective_mode": "max"},
        "hydra": {
            "sweeper": {
                "dir": "${run.dir}/sweeps/${.study_name}",
                "study_name": "p3",
                "n_trials": len(trials),
                "n_jobs": parallel,
                "max_failure_rate": 0.25,
                "sampler": {"seed": 0},
                "params": dict(SEARCH_SPACE),
                "enqueue_trials": trials,
            }
        },
    }
    path = workdir / "configs" / "hparams_search" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("# @package _global_\n" + yaml.safe_dump(config, sort_keys=False))


def run_mode(workdir: Path, mode: str, parallel: int, study_name: str, search: str) -> dict[str, Any]:
    import optuna

    from sesemi.sweep.storage import make_storage

    cmd = [
        sys.executable,
        "-m",
        "sesemi.train",
        "-m",
        f"hparams_search={search}",
        f"hydra.sweeper.study_name={study_name}",
        f"hydra.sweeper.n_jobs={parallel}",
        *MODES[mode],
        *TRIAL,
    ]
    # One thread per trial process: 4 processes share the machine's cores in every mode alike.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    started_at = datetime.now()
    started = time.perf_counter()
    load_before = load()
    proc = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"{mode} sweep failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    sweep_dir = workdir / "runs" / "sweeps" / study_name
    study = optuna.load_study(study_name=study_name, storage=make_storage(None, sweep_dir))
    trials = study.get_trials(deepcopy=False)
    completions = sorted(
        ((t.datetime_complete - started_at).total_seconds(), t.value, t.number, t.params)
        for t in trials
        if t.state.name == "COMPLETE"
    )
    states: dict[str, int] = {}
    for t in trials:
        states[t.state.name] = states.get(t.state.name, 0) + 1
    busy = sum((t.datetime_complete - t.datetime_start).total_seconds() for t in trials if t.datetime_complete)
    return {
        "mode": mode,
        "study": study_name,
        "command": " ".join(cmd[1:]),
        "wall_s": round(wall, 1),
        "load_before": load_before,
        "load_after": load(),
        "states": states,
        "completions": completions,
        "trial_seconds_total": round(busy, 1),
        "pruned_steps": {t.number: max(t.intermediate_values) for t in trials if t.state.name == "PRUNED"},
    }


def time_to(result: dict[str, Any], value: float) -> float | None:
    """Seconds from launch until a completed trial reached ``value`` (None: never)."""
    return next((round(s, 1) for s, v, _, _ in result["completions"] if v >= value - 1e-12), None)


def collect(args: argparse.Namespace) -> dict[str, Any]:
    """Run the sweeps: every mode on every seed's draw."""
    workdir = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="sesemi_p3_"))
    workdir.mkdir(parents=True, exist_ok=True)
    info = machine()
    runs: list[dict[str, Any]] = []
    configurations = {}
    for i, seed in enumerate(args.seeds):
        configurations[seed] = draw_trials(args.trials, seed)
        write_search_config(workdir, configurations[seed], args.parallel, f"p3_s{seed}")
        # Alternate the order of the modes between seeds: a shared machine's load drifts.
        for mode in args.modes if i % 2 == 0 else list(reversed(args.modes)):
            print(f"[p3] seed {seed}: {mode} ...", flush=True)
            r = run_mode(workdir, mode, args.parallel, f"{mode}_s{seed}", f"p3_s{seed}")
            r["seed"] = seed
            runs.append(r)
            print(
                f"[p3] {mode}: {r['wall_s']} s, {r['states']}, best {max(v for _, v, _, _ in r['completions']):.4f}",
                flush=True,
            )
    if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    return {
        "name": SECTION,
        "machine": info,
        "trials": args.trials,
        "parallel": args.parallel,
        "seeds": args.seeds,
        "modes": args.modes,
        "search_space": SEARCH_SPACE,
        "trial_overrides": TRIAL,
        "mode_overrides": MODES,
        "configurations": configurations,
        "runs": runs,
        "command": command_line("sweep_async.py", args.argv),
    }


def summarize(data: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[str]]:
    """Per (seed, mode) rows, per-mode medians, and what they say (derived from the numbers only)."""
    rows, notes = [], []
    positions, pruned_best = [], 0
    for seed in data["seeds"]:
        results = {r["mode"]: r for r in data["runs"] if r["seed"] == seed}
        reference = results.get("sync") or next(iter(results.values()))
        target = max(v for _, v, _, _ in reference["completions"])
        first = next(c for c in reference["completions"] if c[1] >= target - 1e-12)
        positions.append(
            f"seed {seed}: trial {first[2]} (batch {first[2] // data['parallel'] + 1} of "
            f"{-(-data['trials'] // data['parallel'])})"
        )
        for mode in data["modes"]:
            r = results[mode]
            best = max(r["completions"], key=lambda c: c[1])
            reach = time_to(r, target)
            if mode != "sync" and str(first[2]) in {str(k) for k in r["pruned_steps"]}:
                pruned_best += 1
            rows.append(
                {
                    "seed": seed,
                    "mode": mode,
                    "best_value": round(best[1], 4),
                    "best_trial": best[2],
                    "time_to_best_s": round(best[0], 1),
                    "time_to_reference_best_s": reach,
                    "ratio_vs_sync": round(reach / time_to(reference, target), 2) if reach is not None else None,
                    "wall_s": r["wall_s"],
                    "wall_ratio_vs_sync": round(r["wall_s"] / reference["wall_s"], 2),
                    "states": r["states"],
                    "trial_seconds_total": r["trial_seconds_total"],
                    "load": f"{r['load_before']} -> {r['load_after']}",
                }
            )
    medians = []
    for mode in data["modes"]:
        mine = [r for r in rows if r["mode"] == mode]
        ratios = [r["ratio_vs_sync"] for r in mine if r["ratio_vs_sync"] is not None]
        medians.append(
            {
                "mode": mode,
                "median_ratio_vs_sync": round(median(ratios), 2) if ratios else None,
                "range": f"{min(ratios)}x-{max(ratios)}x" if ratios else "-",
                "reached": f"{len(ratios)}/{len(mine)}",
                "median_wall_ratio_vs_sync": round(median(r["wall_ratio_vs_sync"] for r in mine), 2),
            }
        )
    by_mode = {m["mode"]: m for m in medians}
    if "async_prune" in by_mode and "sync" in by_mode:
        m = by_mode["async_prune"]
        verdict = "met" if m["median_ratio_vs_sync"] is not None and m["median_ratio_vs_sync"] <= 0.5 else "not met"
        notes.append(
            f"Goal (`async_prune` reaches sync's best in <= 0.5x sync's time): **{verdict}** here, "
            + (
                f"median {m['median_ratio_vs_sync']}x ({m['range']}; "
                if m["median_ratio_vs_sync"] is not None
                else "it never did ("
            )
            + f"sync's best reached in {m['reached']} draws). The whole "
            f"budget took {m['median_wall_ratio_vs_sync']}x of sync's wall time with pruning, "
            f"{by_mode.get('async', {}).get('median_wall_ratio_vs_sync', '-')}x without."
        )
    notes.append(
        "Where sync's best configuration fell in the order: " + "; ".join(positions) + ". A best in the first batch "
        "is found at the same moment by every mode (all start the same 4 trials at once); the later it falls, the "
        "more the asynchronous modes gain (they finish the budget sooner)."
    )
    if pruned_best:
        notes.append(
            f"The pruner stopped sync's best configuration in {pruned_best} of {len(data['seeds'])} draws "
            "(its early validations were below the median): the price of pruning."
        )
    return rows, medians, notes


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=16, help="trial budget of every sweep")
    parser.add_argument("--parallel", type=int, default=4, help="trials in flight (n_jobs / workers)")
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=[0, 1, 2, 3],
        help="one draw of the budget (and so one order of the configurations) per seed",
    )
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    parser.add_argument("--keep", help="run in this dir and keep the sweeps (default: a temporary dir)")
    parser.add_argument("--from-json", help="no sweeps: rebuild the tables from an earlier results file")
    parser.add_argument("--no-doc", action="store_true", help="do not rewrite the section of docs/benchmarks.md")
    args = parser.parse_args(argv)
    args.argv = argv

    if args.from_json:
        data = json.loads(Path(args.from_json).read_text())
        data.setdefault("modes", list(MODES))
    else:
        data = collect(args)
    rows, medians, notes = summarize(data)
    data.update(rows=rows, medians=medians, notes=notes)
    out = write_json(RESULTS / f"{SECTION}.json", data)
    table = markdown_table(
        ["seed", "mode", "best val/acc (trial)", "time to sync's best", "vs sync", "sweep wall time", "trials", "load"],
        [
            [
                r["seed"],
                r["mode"],
                f"{r['best_value']} ({r['best_trial']})",
                f"{r['time_to_reference_best_s']} s" if r["time_to_reference_best_s"] is not None else "never",
                f"{r['ratio_vs_sync']}x" if r["ratio_vs_sync"] is not None else "-",
                f"{r['wall_s']} s",
                ", ".join(f"{n} {s.lower()}" for s, n in sorted(r["states"].items())),
                r["load"],
            ]
            for r in rows
        ],
    )
    summary = markdown_table(
        ["mode", "time to sync's best, vs sync (median, range)", "reached sync's best", "sweep wall time, vs sync"],
        [
            [
                m["mode"],
                f"{m['median_ratio_vs_sync']}x ({m['range']})" if m["median_ratio_vs_sync"] is not None else "-",
                m["reached"],
                f"{m['median_wall_ratio_vs_sync']}x",
            ]
            for m in medians
        ],
    )
    print(table, summary, *notes, f"[p3] results: {out}", sep="\n")
    if not args.no_doc:
        info = data["machine"]
        setup = (
            f"{data['trials']} trials, {data['parallel']} at a time, FixMatch on the embedded digits (4 labels per "
            f"class, 48 steps per trial); unequal trial lengths through widths "
            f"{data['search_space']['model.backbone.width']} and unlabeled batches "
            f"{data['search_space']['data.unlabeled_batch_size']}; median pruner after 4 trials. Per seed, one draw "
            "of the budget from the search space (seeded random sampler), enqueued in the same order in the three "
            "sweeps, so they run the same configurations. Time to sync's best: from launching the command until a "
            "completed trial reached the best value of the synchronous sweep (as recorded in the study). The "
            "synchronous sweep runs every trial as a process of its own (as any one-job-per-trial launcher does); "
            f"asynchronous workers start once. Machine: {info['cpu_count']} CPUs, shared with other jobs (load "
            f"average before -> after each sweep in the last column), torch {info['torch']}, one thread per trial "
            "process."
        )
        loads = [r[key] for r in data["runs"] for key in ("load_before", "load_after")]
        if loads and max(loads) > 2 * info["cpu_count"]:
            setup += (
                f" **Noisy measurement**: the machine was heavily shared while this ran (load average up to "
                f"{max(loads)} on {info['cpu_count']} CPUs, from other sessions' tests and sweeps); every mode ran "
                "slower and unevenly, so the ratios are rougher than on a quiet machine."
            )
        body = "\n\n".join([setup, summary, *notes, table, reproduce(data["command"])])
        write_section(Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md", SECTION, HEADING, body)


if __name__ == "__main__":
    main()
