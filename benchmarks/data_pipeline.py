"""P3 data pipeline: images/s of the multi-view augmentation per worker, and how long training steps wait for data.

Part 1, per-worker throughput. For each built-in experiment, the labeled views (``weak``) and the unlabeled views
(``weak`` + ``strong``: RandAugment, Cutout) are built from the real configs and applied, as a DataLoader worker
does (one torch thread, PIL image in, named tensors out, then the default collate), to images of the experiment's
size and mode: the real digits for the default experiment, random images of the right shape for the others (their
datasets are downloads; the cost of the transforms does not depend on the pixels). From the rate follow the worker
time one training step needs and the step rate one worker can feed.

Part 2, the default experiment for real. ``python -m sesemi.train`` (default config: FixMatch on digits) with a
probe callback that records, for every training step, the time from the end of the previous step to the start of
this one (the wait for the batch, plus Lightning's bookkeeping between two steps) and the whole step; steps with a
validation in between are left out. It runs for each ``data.num_workers`` / ``data.persistent_workers`` setting
asked for, alternating.

    python benchmarks/data_pipeline.py
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    DOC,
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

# experiment -> (config overrides, image size, PIL mode)
EXPERIMENTS: dict[str, tuple[list[str], int, str]] = {
    "default (digits 8x8)": ([], 8, "L"),
    "fmnist_fixmatch (28x28)": (["experiment=fmnist_fixmatch"], 28, "L"),
    "cifar10_wrn28_fixmatch_4000 (32x32)": (["experiment=cifar10_wrn28_fixmatch_4000"], 32, "RGB"),
    "stl10_fixmatch (96x96)": (["experiment=stl10_fixmatch"], 96, "RGB"),
}

PROBE = '''
"""Data-wait probe: per-step (wait, step) durations to $SESEMI_DATA_PROBE at the end of fit."""
import json, os, time

import pytorch_lightning as pl


class DataWaitProbe(pl.Callback):
    def __init__(self):
        self.last_end = None
        self.in_val = False
        self.rows = []
        self.started = None

    def on_train_start(self, trainer, pl_module):
        self.started = time.perf_counter()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.batch_start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        now = time.perf_counter()
        if self.last_end is not None and not self.in_val:
            self.rows.append([self.batch_start - self.last_end, now - self.last_end])
        self.last_end, self.in_val = now, False

    def on_validation_start(self, trainer, pl_module):
        self.in_val = True

    def on_train_end(self, trainer, pl_module):
        with open(os.environ["SESEMI_DATA_PROBE"], "w") as f:
            json.dump({"rows": self.rows, "train_s": time.perf_counter() - self.started}, f)
'''


# ---------------------------------------------------------------------------------------------------------------
# Part 1: per-worker throughput


def compose(overrides: list[str], output_dir: str):
    import sesemi

    return sesemi.compose(overrides, output_dir=output_dir)


def source_images(size: int, mode: str, n: int, digits: bool) -> list:
    import numpy as np
    from PIL import Image

    if digits:
        from sesemi.datasets import Digits

        ds = Digits(split="train")
        return [ds[i % len(ds)][0] for i in range(n)]
    rng = np.random.default_rng(0)
    shape = (size, size) if mode == "L" else (size, size, 3)
    return [Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode) for _ in range(n)]


def worker_rate(views, images: list, batch_size: int, seconds: float) -> dict[str, float]:
    """Source images/s through ``views`` plus the default collate, in batches of ``batch_size``."""
    from torch.utils.data import default_collate

    n_done, started = 0, time.perf_counter()
    i = 0
    while True:
        batch = [views(images[(i + k) % len(images)]) for k in range(batch_size)]
        default_collate(batch)
        i += batch_size
        n_done += batch_size
        elapsed = time.perf_counter() - started
        if elapsed >= seconds:
            return {"images_per_s": n_done / elapsed, "views_per_image": len(views.views)}


def throughput(args) -> list[dict[str, Any]]:
    import torch

    from sesemi.builders import instantiate_key
    from sesemi.data import MultiView

    torch.set_num_threads(1)  # what a DataLoader worker gets
    rows = []
    for name, (overrides, size, mode) in EXPERIMENTS.items():
        if args.experiments and not any(e in name for e in args.experiments):
            continue
        cfg = compose(overrides, tempfile.gettempdir())
        labeled = MultiView(dict(instantiate_key(cfg, "data.labeled_views")))
        unlabeled = MultiView(dict(instantiate_key(cfg, "data.unlabeled_views")))
        images = source_images(size, mode, 256, digits=not overrides)
        lb, ub = int(cfg.data.labeled_batch_size), int(cfg.data.unlabeled_batch_size)
        rates_l, rates_u, loads = [], [], []
        for _ in range(args.repeats):
            rates_l.append(worker_rate(labeled, images, min(lb, 64), args.seconds)["images_per_s"])
            rates_u.append(worker_rate(unlabeled, images, min(ub, 64), args.seconds)["images_per_s"])
            loads.append(load())
        rl, ru = median(rates_l), median(rates_u)
        worker_s_per_step = lb / rl + ub / ru
        row = {
            "experiment": name,
            "overrides": overrides,
            "image": f"{size}x{size} {mode}",
            "labeled_batch": lb,
            "unlabeled_batch": ub,
            "num_workers_default": int(cfg.data.num_workers),
            "labeled_images_per_s": rl,
            "unlabeled_images_per_s": ru,
            "labeled_views": list(labeled.views),
            "unlabeled_views": list(unlabeled.views),
            "worker_ms_per_step": 1000 * worker_s_per_step,
            "steps_per_s_one_worker": 1 / worker_s_per_step,
            "steps_per_s_default_workers": int(cfg.data.num_workers) / worker_s_per_step,
            "loads": loads,
        }
        rows.append(row)
        print(
            f"{name}: labeled {rl:.0f} img/s, unlabeled {ru:.0f} img/s per worker, "
            f"{row['worker_ms_per_step']:.1f} worker-ms/step (load {loads[-1]})",
            file=sys.stderr,
            flush=True,
        )
    return rows


# ---------------------------------------------------------------------------------------------------------------
# Part 2: data wait of real runs of the default experiment


def run_probe(workdir: Path, setting: list[str], steps: int, val_every: int) -> dict[str, Any]:
    probe = workdir / f"probe_{time.time_ns()}.json"
    cmd = [
        sys.executable,
        "-m",
        "sesemi.train",
        "+callbacks.data_wait._target_=sesemi_data_probe.DataWaitProbe",
        f"trainer.max_steps={steps}",
        f"trainer.val_check_interval={val_every}",
        "callbacks.progress_bar=null",
        "run.id=data_pipeline",
        *setting,
    ]
    started = time.perf_counter()
    proc = subprocess.run(
        cmd,
        cwd=workdir,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "SESEMI_DATA_PROBE": str(probe)},
    )
    wall = time.perf_counter() - started
    if proc.returncode != 0 or not probe.is_file():
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    data = json.loads(probe.read_text())
    rows = data["rows"]
    wait, step = sum(r[0] for r in rows), sum(r[1] for r in rows)
    return {
        "wait_fraction": wait / step,
        "median_wait_ms": 1000 * median(r[0] for r in rows),
        "median_step_ms": 1000 * median(r[1] for r in rows),
        "steps_timed": len(rows),
        "train_s": data["train_s"],
        "wall_s": wall,
        "load": load(),
    }


SETTINGS = {
    "num_workers=2, persistent (default)": ["data.num_workers=2", "data.persistent_workers=true"],
    "num_workers=2, not persistent": ["data.num_workers=2", "data.persistent_workers=false"],
    "num_workers=1, persistent": ["data.num_workers=1", "data.persistent_workers=true"],
    "num_workers=0 (main process)": ["data.num_workers=0"],
}


def data_wait(args) -> dict[str, Any]:
    settings = {k: v for k, v in SETTINGS.items() if not args.settings or any(s in k for s in args.settings)}
    out: dict[str, list[dict]] = {k: [] for k in settings}
    with tempfile.TemporaryDirectory(prefix="sesemi-data-") as tmp:
        workdir = Path(tmp)
        (workdir / "src").mkdir()
        (workdir / "src" / "sesemi_data_probe.py").write_text(PROBE)
        names = list(settings)
        for rep in range(args.runs):
            for name in names[rep % len(names) :] + names[: rep % len(names)]:
                r = run_probe(workdir, [*settings[name], *args.overrides], args.steps, args.val_every)
                out[name].append(r)
                print(
                    f"{name}: wait {100 * r['wait_fraction']:.1f}% of step time, step {r['median_step_ms']:.0f} ms, "
                    f"train {r['train_s']:.1f} s (load {r['load']})",
                    file=sys.stderr,
                    flush=True,
                )
    summary = {}
    for name, runs in out.items():
        summary[name] = {
            "runs": runs,
            "wait_fraction": median(r["wait_fraction"] for r in runs),
            "median_wait_ms": median(r["median_wait_ms"] for r in runs),
            "median_step_ms": median(r["median_step_ms"] for r in runs),
            "train_s": median(r["train_s"] for r in runs),
            "loads": [r["load"] for r in runs],
        }
    return summary


# ---------------------------------------------------------------------------------------------------------------


def table(result: dict[str, Any], command: str) -> str:
    m = result["machine"]
    lines: list[str] = []
    if result["throughput"]:
        loads = [x for r in result["throughput"] for x in r["loads"]]
        lines += [
            (
                f"Part 1: one worker (one torch thread), medians of {result['repeats']} timings of "
                f"{result['seconds']:g} s "
                f"each; {m['cpu_count']} shared cores, load average {min(loads):.1f} – {max(loads):.1f}."
            ),
            "",
            markdown_table(
                [
                    "experiment",
                    "images",
                    "labeled (weak) img/s per worker",
                    "unlabeled (weak+strong) img/s per worker",
                    "batch (labeled + unlabeled)",
                    "worker-ms per step",
                    "steps/s one worker feeds",
                    "default num_workers",
                ],
                [
                    [
                        r["experiment"],
                        r["image"],
                        f"{r['labeled_images_per_s']:.0f}",
                        f"{r['unlabeled_images_per_s']:.0f}",
                        f"{r['labeled_batch']} + {r['unlabeled_batch']}",
                        f"{r['worker_ms_per_step']:.0f}",
                        f"{r['steps_per_s_one_worker']:.2f}",
                        r["num_workers_default"],
                    ]
                    for r in result["throughput"]
                ],
            ),
        ]
    if result.get("data_wait"):
        dw = result["data_wait"]
        lines += [
            "",
            (
                f"Part 2: `python -m sesemi.train` (default experiment) for {result['steps']} steps, validation every "
                f"{result['val_every']}; medians of {result['runs']} runs per setting, alternating. *Wait* is the time "
                "from the end of a step to the start of the next (fetching the batch, plus Lightning's own "
                "bookkeeping), "
                "as a share of the step time, over the steps without a validation in between."
            ),
            "",
            markdown_table(
                [
                    "setting",
                    "wait / step time",
                    "median wait",
                    "median step",
                    "training time (incl. validation)",
                    "load",
                ],
                [
                    [
                        name,
                        f"**{100 * s['wait_fraction']:.1f}%**",
                        f"{s['median_wait_ms']:.1f} ms",
                        f"{s['median_step_ms']:.0f} ms",
                        f"{s['train_s']:.1f} s",
                        f"{min(s['loads']):.1f} – {max(s['loads']):.1f}",
                    ]
                    for name, s in dw.items()
                ],
            ),
        ]
    lines += ["", reproduce(command)]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="duration of one throughput timing")
    parser.add_argument("--repeats", type=int, default=3, help="throughput timings per experiment")
    parser.add_argument("--experiments", nargs="*", help="substrings of the experiments to time (default: all)")
    parser.add_argument("--steps", type=int, default=200, help="training steps of each part-2 run (0: skip part 2)")
    parser.add_argument("--val-every", type=int, default=100)
    parser.add_argument("--runs", type=int, default=2, help="part-2 runs per setting")
    parser.add_argument("--settings", nargs="*", help="substrings of the part-2 settings to run (default: all)")
    parser.add_argument("--out", type=Path, default=RESULTS / "data_pipeline.json")
    parser.add_argument("--doc", type=Path, default=DOC)
    parser.add_argument("--no-doc", action="store_true")
    parser.add_argument("overrides", nargs="*", help="extra overrides of the part-2 training runs")
    args = parser.parse_args()
    result: dict[str, Any] = {
        "machine": machine(),
        "seconds": args.seconds,
        "repeats": args.repeats,
        "steps": args.steps,
        "val_every": args.val_every,
        "runs": args.runs,
    }
    result["throughput"] = throughput(args)
    if args.steps > 0:
        result["data_wait"] = data_wait(args)
    result["command"] = command_line("data_pipeline.py")
    write_json(args.out, result)
    text = table(result, result["command"])
    print(text)
    if not args.no_doc:
        write_section(args.doc, "P3", "Performance P3: data pipeline", text)


if __name__ == "__main__":
    main()
