"""Fashion-MNIST accuracy with few labels: supervised-only vs each semi-supervised method, same CPU time budget.

Every run is the real CLI (`python -m sesemi.train experiment=fmnist_fixmatch method=<method> ...`) on the real
Fashion-MNIST (`apt-get install dataset-fashion-mnist`), scored on the 10,000 test images with the checkpoint that was
best on the 5,000 held-out validation images. Each method first runs a short calibration to measure its seconds
per step, then gets as many steps as fit the budget (so the cosine schedule ends when the budget does), with
`trainer.max_time` as a hard stop. Results go to a JSON file and to the table in docs/benchmarks.md.

    python benchmarks/fmnist_accuracy.py --budget-min 4 --labels 10 40 --seeds 0 1 2

Several invocations add to one results file (e.g. all methods with one seed, then the main ones with three), and
the table is written from everything in it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import add_results_args, publish, reproduce, write_json

HEADING = "Fashion-MNIST accuracy with few labels"
FMNIST = Path("/usr/share/datasets/fashion-mnist")
METHODS = [
    "supervised",
    "fixmatch",
    "freematch",
    "softmatch",
    "pseudo_label",
    "mean_teacher",
    "pi_model",
    "entropy_minimization",
    "rotation",
    "fixmatch_rotation",
    "jigsaw",
]
# One backbone and batch for every method: width 16 and 16 labeled + 7x that unlabeled (FixMatch's ratio), so a
# semi-supervised step fits 2 CPU cores (docs/benchmarks.md measures why).
COMMON = [
    "experiment=fmnist_fixmatch",
    "model.backbone.width=16",
    "data.labeled_batch_size=16",
    "data.unlabeled_batch_size=112",
    "data.num_workers=2",
    "callbacks.progress_bar=null",
    "callbacks.images=null",
    "trainer.log_every_n_steps=50",
]


def train(args: list[str], workdir: Path, overrides: list[str]) -> dict:
    proc = subprocess.run(
        [sys.executable, "-m", "sesemi.train", *COMMON, *overrides, *args], cwd=workdir, capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise RuntimeError(f"sesemi.train {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    runs = sorted(workdir.glob("runs/**/metrics.json"), key=lambda p: p.stat().st_mtime)
    return json.loads(runs[-1].read_text())


def seconds_per_step(method: str, labels: int, workdir: Path, overrides: list[str]) -> float:
    """Steady-state seconds per step: the time difference of a 10- and a 40-step run (start-up cancels out)."""
    walls = []
    for steps in (10, 40):
        metrics = train(
            [
                f"method={method}",
                f"data.labels_per_class={labels}",
                f"trainer.max_steps={steps}",
                f"trainer.val_check_interval={steps}",
                "trainer.limit_val_batches=1",
                "run.id=calibrate",
            ],
            workdir,
            overrides,
        )
        walls.append(metrics["wall_time_s"])
    return max((walls[1] - walls[0]) / 30, 1e-3)


def run(
    methods: list[str], labels: list[int], seeds: list[int], budget_min: float, out: Path, overrides: list[str]
) -> list[dict]:
    """Run every (labels, method, seed), adding to the results already in ``out`` (same key, budget included:
    replaced)."""
    results = json.loads(out.read_text()) if out.exists() else []
    per_step: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        (workdir / "data").mkdir()
        (workdir / "data" / "fashion-mnist").symlink_to(FMNIST)
        for n_labels in labels:
            for method in methods:
                if method not in per_step:  # the step cost does not depend on the number of labels
                    per_step[method] = seconds_per_step(method, n_labels, workdir, overrides)
                # Validation runs 10 times; leave it ~10% of the budget.
                steps = max(20, int(budget_min * 60 * 0.9 / per_step[method]))
                seconds = int(budget_min * 60 * 1.1)
                hard_stop = f"00:{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"  # dd:hh:mm:ss
                for seed in seeds:
                    started = time.time()
                    metrics = train(
                        [
                            f"method={method}",
                            f"data.labels_per_class={n_labels}",
                            f"run.seed={seed}",
                            f"trainer.max_steps={steps}",
                            f"trainer.val_check_interval={max(1, steps // 10)}",
                            f"+trainer.max_time={hard_stop}",
                            f"run.id=fmnist_{method}_{n_labels}",
                        ],
                        workdir,
                        overrides,
                    )
                    row = {
                        "method": method,
                        "labels_per_class": n_labels,
                        "seed": seed,
                        "steps": metrics["global_step"],
                        "test_acc": metrics["test"]["test/acc"],
                        "val_acc": metrics["objective"]["value"],
                        "wall_s": round(time.time() - started, 1),
                        "s_per_step": round(per_step[method], 4),
                        "budget_min": budget_min,
                        "load": os.getloadavg()[0],
                    }
                    print(json.dumps(row), flush=True)
                    results = [r for r in results if _key(r) != _key(row)]
                    results.append(row)
                    write_json(out, results)
    return results


def _key(row: dict) -> tuple:
    return row["method"], row["labels_per_class"], row["seed"], row["budget_min"]


def table(results: list[dict], command: str) -> str:
    lines = [
        "2 CPU cores; SmallCNN width 16 (72k parameters); batches of 16 labeled + 112 unlabeled images; *budget*: "
        "minutes of training per run; test accuracy (10,000 images) of the checkpoint best on validation (EMA "
        "weights); mean ± std over seeds; *steps*: mean optimizer steps that fit the budget.",
        "",
        "| labels/class | budget | method | test accuracy | test error | seeds | steps | wall time/run |",
        "|---|---|---|---|---|---|---|---|",
    ]
    groups = sorted(
        {(r["labels_per_class"], r["budget_min"], r["method"]) for r in results},
        key=lambda k: (k[0], k[1], METHODS.index(k[2])),
    )
    for n_labels, budget, method in groups:
        rows = [
            r for r in results if (r["labels_per_class"], r["budget_min"], r["method"]) == (n_labels, budget, method)
        ]
        accs = [100 * r["test_acc"] for r in rows]
        mean = statistics.mean(accs)
        spread = f" ± {statistics.stdev(accs):.1f}" if len(accs) > 1 else f" (seed {rows[0]['seed']})"
        lines.append(
            f"| {n_labels} | {budget:g} min | {method} | {mean:.1f}{spread} | {100 - mean:.1f} | {len(rows)} | "
            f"{statistics.mean(r['steps'] for r in rows):.0f} | {statistics.mean(r['wall_s'] for r in rows):.0f} s |"
        )
    return "\n".join([*lines, "", reproduce(command)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    parser.add_argument("--labels", nargs="+", type=int, default=[10, 40])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--budget-min", type=float, default=4.0)
    add_results_args(parser, "fmnist_accuracy")
    args = parser.parse_intermixed_args()
    if args.table_only:
        publish(args, "fmnist", HEADING, table)
        return
    if not FMNIST.is_dir():
        sys.exit(f"Fashion-MNIST not found at {FMNIST}: apt-get install dataset-fashion-mnist")
    results = run(args.methods, args.labels, args.seeds, args.budget_min, args.out, args.overrides)
    publish(args, "fmnist", HEADING, table, results)


if __name__ == "__main__":
    main()
