"""The shipped recipes as a user runs them: each semi-supervised `experiment=` config beside supervised-only on the
same data, labels and time budget.

Every run is the real CLI (`python -m sesemi.train experiment=<recipe> data.labels_per_class=<n> run.seed=<s>`) with
nothing else changed but `trainer.max_time` (the budget, a hard stop: a run that is slower than the recipe expects
ends early and scores what it reached) and no progress bar or image logging. Score: the test accuracy of the
checkpoint best on validation, with the EMA weights the configs evaluate. Results go to
`benchmarks/results/recipes.json` and the `recipes` section of docs/benchmarks.md.

    python benchmarks/recipes.py --datasets fmnist --labels 10 40 --seeds 0 1 2

Several invocations add to one results file; `--roles semi` re-runs only the semi-supervised recipes (after a change
to them), keeping the supervised-only rows.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import add_results_args, load, publish, reproduce, write_json
from fmnist_accuracy import FMNIST

HEADING = "The shipped recipes against supervised-only"
QUIET = ["callbacks.progress_bar=null", "callbacks.images=null"]
ROLES = ("semi", "supervised")
# dataset -> (semi-supervised recipe, supervised-only recipe), both shipped in configs/experiment/
RECIPES: dict[str, tuple[str, str]] = {
    "fmnist": ("fmnist_softmatch_cpu", "fmnist_supervised"),
    "digits": ("digits_softmatch_cpu", "digits_supervised"),
}
# digits_supervised validates on the test split (the README's quick start); here it holds out validation images as
# the semi-supervised recipe does, so both choose their checkpoint without seeing the test split.
SUPERVISED_OVERRIDES = {
    "digits": ["data.val=null", "data.val_per_class=20", "data.test={_target_:sesemi.datasets.Digits,split:test}"],
}


def train(experiment: str, overrides: list[str], workdir: Path) -> dict:
    args = [sys.executable, "-m", "sesemi.train", f"experiment={experiment}", *QUIET, *overrides]
    proc = subprocess.run(args, cwd=workdir, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args[2:])} failed:\n{proc.stderr[-3000:]}")
    runs = sorted(workdir.glob(f"runs/{experiment}/*/metrics.json"), key=lambda p: p.stat().st_mtime)
    return json.loads(runs[-1].read_text())


def run(
    datasets: list[str],
    labels: list[int],
    seeds: list[int],
    budget_min: float,
    out: Path,
    extra: list[str],
    roles: tuple[str, ...] | list[str] = ROLES,
) -> list[dict]:
    results = json.loads(out.read_text()) if out.exists() else []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        (workdir / "data").mkdir()
        (workdir / "data" / "fashion-mnist").symlink_to(FMNIST)
        for dataset in datasets:
            for n_labels in labels:
                for seed in seeds:
                    for role, experiment in zip(ROLES, RECIPES[dataset], strict=True):
                        if role not in roles:
                            continue
                        overrides = [
                            *(SUPERVISED_OVERRIDES.get(dataset, []) if role == "supervised" else []),
                            f"data.labels_per_class={n_labels}",
                            f"run.seed={seed}",
                            f"trainer.max_time=00:00:{int(budget_min):02d}:{round(60 * (budget_min % 1)):02d}",
                            *extra,
                        ]
                        load_before, started = load(), time.time()
                        metrics = train(experiment, overrides, workdir)
                        row = {
                            "dataset": dataset,
                            "recipe": experiment,
                            "role": role,
                            "labels_per_class": n_labels,
                            "seed": seed,
                            "budget_min": budget_min,
                            "steps": metrics["global_step"],
                            "test_acc": metrics["test"]["test/acc"],
                            "val_acc": metrics["objective"]["value"],
                            "wall_s": round(time.time() - started, 1),
                            "load": [load_before, load()],
                        }
                        print(json.dumps(row), flush=True)
                        key = (experiment, n_labels, seed, budget_min)
                        results = [
                            r
                            for r in results
                            if (r["recipe"], r["labels_per_class"], r["seed"], r["budget_min"]) != key
                        ]
                        results.append(row)
                        write_json(out, results)
    return results


def _summary(rows: list[dict]) -> tuple[float, str]:
    accs = [100 * r["test_acc"] for r in rows]
    seeds = ", ".join(str(r["seed"]) for r in sorted(rows, key=lambda r: r["seed"]))
    spread = f" ± {statistics.stdev(accs):.1f}" if len(accs) > 1 else ""
    label = "seeds" if len(rows) > 1 else "seed"
    return statistics.mean(accs), f"{statistics.mean(accs):.1f}{spread} ({label} {seeds})"


def table(results: list[dict], command: str) -> str:
    lines = [
        "Each recipe exactly as shipped (`experiment=<recipe> data.labels_per_class=<n> run.seed=<s>`) with "
        "`trainer.max_time` at the budget, on this 2-core machine; test accuracy of the checkpoint best on "
        "validation (EMA weights), mean ± std over seeds; *gain*: semi-supervised minus supervised-only over the "
        "seeds both have; *steps* and *wall*: means per run (wall includes start-up and the test pass; load average "
        "before and after in the last column).",
        "",
        "| dataset | labels/class | budget | semi-supervised recipe | test accuracy | steps | wall | "
        "supervised-only recipe | test accuracy | steps | wall | gain | load |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    groups = sorted({(r["dataset"], r["labels_per_class"], r["budget_min"]) for r in results})
    for dataset, n_labels, budget in groups:
        key = (dataset, n_labels, budget)
        rows = [r for r in results if (r["dataset"], r["labels_per_class"], r["budget_min"]) == key]
        by_role = {role: [r for r in rows if r["role"] == role] for role in ROLES}
        cells = []
        for role in ROLES:
            if not by_role[role]:
                cells += ["-"] * 4
                continue
            _, text = _summary(by_role[role])
            cells += [
                f"`{by_role[role][0]['recipe']}`",
                text,
                f"{statistics.mean(r['steps'] for r in by_role[role]):.0f}",
                f"{statistics.mean(r['wall_s'] for r in by_role[role]) / 60:.1f} min",
            ]
        both = {r["seed"] for r in by_role["semi"]} & {r["seed"] for r in by_role["supervised"]}
        gain = "-"
        if both:
            semi, _ = _summary([r for r in by_role["semi"] if r["seed"] in both])
            sup, _ = _summary([r for r in by_role["supervised"] if r["seed"] in both])
            gain = f"{semi - sup:+.1f}"
        loads = [x for r in rows for x in r["load"]]
        lines.append(
            f"| {dataset} | {n_labels} | {budget:g} min | " + " | ".join(cells) + f" | {gain} | "
            f"{min(loads):.1f}-{max(loads):.1f} |"
        )
    return "\n".join([*lines, "", reproduce(command)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    parser.add_argument("--labels", nargs="+", type=int, default=[10, 40])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--budget-min", type=float, default=14.0)
    parser.add_argument("--roles", nargs="+", default=ROLES, choices=ROLES, help="which recipe of each dataset runs")
    add_results_args(parser, "recipes")
    args = parser.parse_intermixed_args()
    if args.table_only:
        publish(args, "recipes", HEADING, table)
        return
    if "fmnist" in args.datasets and not FMNIST.is_dir():
        sys.exit(f"Fashion-MNIST not found at {FMNIST}: apt-get install dataset-fashion-mnist")
    results = run(args.datasets, args.labels, args.seeds, args.budget_min, args.out, args.overrides, args.roles)
    publish(args, "recipes", HEADING, table, results)


if __name__ == "__main__":
    main()
