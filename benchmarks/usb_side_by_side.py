"""sesemi beside Microsoft USB (``semilearn`` 0.3.2) on Fashion-MNIST: the same FixMatch step, and USB's FixMatch
through its own Trainer in a wall-clock budget.

USB is installed only for this benchmark, in a venv of its own (``bash benchmarks/setup_usb.sh``, see there);
the script itself runs with the project venv and starts USB's side with ``--usb-python`` (default ``.venv-usb``).

``step``: the FixMatch step of each framework on the same work, interleaved A/B repetitions, one fresh process per
side and repetition. Both sides train the same network (sesemi's ``SmallCNN`` width 16 + linear head for 28x28
1-channel images, built by sesemi's builders from ``experiment=fmnist_fixmatch`` and handed to USB as its net
builder), on the same batch (16 labeled weak + 112 unlabeled x (weak, strong)), the same views (sesemi's
``augment/fashion_mnist.yaml`` pipelines on the real Fashion-MNIST and sesemi's seeded split feed both: USB's
loaders read sesemi's datasets with the sample keys renamed), the same optimizer (SGD 0.03, Nesterov momentum 0.9,
weight decay 5e-4 without decay on norms/biases, cosine), threshold 0.95, EMA 0.999, one forward pass over the
concatenated views, float32 on the CPU, each side's loaders with 2 worker processes per stream.

- sesemi: the real Lightning path, as ``python -m sesemi.train`` builds it (``build_datamodule``/``build_module``/
  ``build_trainer`` of the recipe ``benchmarks/fmnist_accuracy.py`` runs: its callbacks less the progress bar and
  image grids, TensorBoard logging every 50 steps), validation and checkpoints off (not per-step work);
- USB: ``semilearn.lighting.Trainer.fit`` with ``semilearn.algorithms.fixmatch.FixMatch`` (its ``train_step``,
  hooks for the optimizer step, scheduler, EMA, timing and logging every 50 steps), loaders by its
  ``get_data_loader``; its evaluation falls after the timed steps.

What is timed: a timestamp at the end of every training step (sesemi: a callback's ``on_train_batch_end``; USB: a
hook after all of its ``after_train_step`` hooks), so the time between two is one full cycle of the loop: waiting
for the next batch from the loader workers, moving it, forward, backward, optimizer and scheduler step, EMA update,
hooks and logging. A repetition's rate is (steps timed) / (time from the end of the last warm-up step to the end of
the last step); the table gives the median over repetitions of each side and the ratio of the medians
(sesemi / USB), with the load average after every run.

``budget``: USB's FixMatch through ``semilearn``'s ``get_config``/``FixMatch``/``Trainer.fit`` for a wall-clock budget
on Fashion-MNIST with sesemi's seeded split (10 labels/class: the same 100 labeled images, the same 54,900 unlabeled,
the same 5,000 validation images; USB's ``split_ssl_data`` has no seed and writes index files into site-packages, so
the split is handed to it), the network and views above, USB's defaults otherwise (FixMatch T 0.5, hard labels).
Like ``fmnist_accuracy.py``: a short calibration run measures its seconds per step, the run gets the steps that fit
90% of the budget (its cosine schedule ends with the budget), USB's validation (EMA weights) runs 10 times on the
5,000 validation images, and a hook stops it at 110% of the budget. Scored on the 10,000 test images with the last
raw weights and the last EMA weights (USB reports both).

    bash benchmarks/setup_usb.sh
    python benchmarks/usb_side_by_side.py step --repeats 6 --steps 120
    python benchmarks/usb_side_by_side.py budget --budget-min 14 --seed 0

USB hard-codes CUDA (``.cuda()``, ``torch.cuda.set_device``, ``torch.cuda.Event``, ``torch.cuda.synchronize``): in
USB's process only, ``cpu_shim`` makes those no-ops or CPU clocks, so its own code runs unchanged on the CPU.
"""

from __future__ import annotations

import argparse
import importlib.abc
import importlib.machinery
import importlib.util
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import types
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    DOC,
    RESULTS,
    ROOT,
    command_line,
    load,
    machine,
    markdown_table,
    median,
    reproduce,
    write_json,
    write_section,
)
from fmnist_accuracy import COMMON, FMNIST, HEADING

USB_VERSION = "0.3.2"
USB_PYTHON = ROOT / ".venv-usb" / "bin" / "python"
# Imported by semilearn's package for its audio, NLP, logging and medical-image paths only; not installed.
USB_UNUSED_IMPORTS = ("torchaudio", "transformers", "wandb", "aim", "skimage")


# ---------------------------------------------------------------------------------------------------------------
# Making semilearn importable and runnable on the CPU (used in USB's process only).


class _Unavailable(type):
    """A stand-in for a name of a package that is not installed: fails by name when used."""

    def __getattr__(cls, attr: str) -> Any:
        raise ModuleNotFoundError(f"{cls.__qualname__}.{attr}: not installed for this benchmark (setup_usb.sh)")

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        raise ModuleNotFoundError(f"{cls.__qualname__}: not installed for this benchmark (setup_usb.sh)")


class _StandIns(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Empty modules for ``USB_UNUSED_IMPORTS`` (and their submodules) that are not installed."""

    def __init__(self, roots: tuple[str, ...]) -> None:
        self.roots = tuple(r for r in roots if importlib.util.find_spec(r) is None)

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in self.roots:
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec):
        module = types.ModuleType(spec.name)
        module.__path__ = []
        module.__getattr__ = lambda attr: _Unavailable(attr, (), {"__qualname__": f"{spec.name}.{attr}"})
        return module

    def exec_module(self, module) -> None:
        pass


class _CPUEvent:
    """``torch.cuda.Event(enable_timing=True)`` on the CPU clock (USB's TimerHook records the data wait with it)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.t = time.perf_counter()

    def record(self, *args: Any) -> None:
        self.t = time.perf_counter()

    def elapsed_time(self, end: _CPUEvent) -> float:
        return 1000 * (end.t - self.t)


def import_semilearn():
    """``import semilearn`` with stand-ins for its unused heavy imports and CUDA calls made CPU no-ops."""
    import torch

    if "semilearn" in sys.modules:
        return sys.modules["semilearn"]

    sys.meta_path.append(_StandIns(USB_UNUSED_IMPORTS))
    torch.Tensor.cuda = lambda self, *args, **kwargs: self
    torch.nn.Module.cuda = lambda self, *args, **kwargs: self
    torch.cuda.set_device = lambda *args, **kwargs: None
    torch.cuda.synchronize = lambda *args, **kwargs: None
    torch.cuda.Event = _CPUEvent
    warnings.filterwarnings("ignore")
    import semilearn

    if semilearn.__dict__.get("__version__", USB_VERSION) != USB_VERSION:  # pragma: no cover
        sys.exit(f"error: semilearn {semilearn.__version__} found, this benchmark expects {USB_VERSION}")
    return semilearn


# ---------------------------------------------------------------------------------------------------------------
# The shared setup: sesemi's config, data and network; USB's sample keys and forward contract.


def compose(output_dir: Path, overrides: list[str]):
    import sesemi

    return sesemi.compose([*COMMON, f"run.data_root={FMNIST.parent}", *overrides], output_dir=output_dir)


def usb_datasets(dm) -> dict[str, Any]:
    """sesemi's datasets (its split, its views) with USB's sample keys."""
    from torch.utils.data import Dataset

    from sesemi.data.datamodule import ViewDataset

    class Renamed(Dataset):
        def __init__(self, dataset: Dataset, keys: dict[str, str], index: str) -> None:
            self.dataset, self.keys, self.index = dataset, keys, index

        def __len__(self) -> int:
            return len(self.dataset)

        def __getitem__(self, i: int) -> dict[str, Any]:
            sample = self.dataset[i]
            return {self.index: i, **{new: sample[old] for old, new in self.keys.items()}}

    labeled = ViewDataset(dm.train_set, dm.split.labeled, dm.labeled_views)
    evaluated = {"image": "x_lb", "target": "y_lb"}
    return {
        "train_lb": Renamed(labeled, {"weak": "x_lb", "target": "y_lb"}, "idx_lb"),
        "train_ulb": Renamed(dm.unlabeled_dataset(), {"weak": "x_ulb_w", "strong": "x_ulb_s"}, "idx_ulb"),
        "eval": Renamed(ViewDataset(dm.train_set, dm.split.val, dm.eval_views), evaluated, "idx_lb"),
        "test": Renamed(ViewDataset(dm.test_set, None, dm.eval_views), evaluated, "idx_lb"),
    }


def usb_net_builder(cfg, seed: int):
    """USB's net builder for sesemi's network: ``{"logits", "feat"}`` out, as every USB net returns."""
    import torch
    from torch import nn

    from sesemi.builders import build_module

    class SesemiNet(nn.Module):
        def __init__(self, num_classes: int) -> None:
            super().__init__()
            torch.manual_seed(seed)
            model = build_module(cfg, num_classes).model
            self.backbone, self.head = model.backbone, model.head

        def forward(self, x, only_fc: bool = False, only_feat: bool = False, **kwargs):
            if only_fc:
                return self.head(x)
            feat = self.backbone(x)
            return feat if only_feat else {"logits": self.head(feat), "feat": feat}

    return lambda num_classes, **kwargs: SesemiNet(num_classes)


def usb_config(cfg, steps: int, save_dir: Path, eval_every: int) -> Any:
    """USB's config for FixMatch with the recipe's hyperparameters (the ones not set are USB's defaults)."""
    from semilearn import get_config

    return get_config(
        {
            "algorithm": "fixmatch",
            "net": "sesemi_small_cnn",  # our builder is handed in; the name only picks USB's default collate
            "dataset": "fashion_mnist_sesemi",  # not one of USB's: it builds no data, the loaders are handed in
            "num_classes": 10,
            "num_labels": int(cfg.data.labels_per_class) * 10,
            "batch_size": int(cfg.data.labeled_batch_size),
            "uratio": int(cfg.data.unlabeled_batch_size) // int(cfg.data.labeled_batch_size),
            "eval_batch_size": int(cfg.data.eval_batch_size),
            "num_workers": int(cfg.data.num_workers),
            "lr": float(cfg.optimizer.lr),
            "momentum": float(cfg.optimizer.momentum),
            "weight_decay": float(cfg.optimizer.weight_decay),
            "ema_m": float(cfg.method.ema.decay),
            "p_cutoff": float(cfg.method.loss_heads.fixmatch.threshold),
            "ulb_loss_ratio": float(cfg.method.loss_heads.fixmatch.weight),
            "epoch": 1,
            "num_train_iter": steps,
            "num_eval_iter": eval_every,
            "num_log_iter": int(cfg.trainer.log_every_n_steps),
            "seed": int(cfg.run.seed),
            "save_dir": str(save_dir),
            "save_name": "usb_fixmatch",
            "gpu": 0,
            "distributed": False,
        }
    )


def eval_data_loader(args, dataset):
    """USB's evaluation loader, as its ``set_data_loader`` makes it (in order, every sample)."""
    from semilearn.core.utils import get_data_loader

    return get_data_loader(args, dataset, args.eval_batch_size, data_sampler=None, num_workers=0, drop_last=False)


def usb_run(cfg, steps: int, eval_every: int, hooks: list, eval_subset: int | None = None):
    """USB's FixMatch through its Trainer for ``steps`` steps (its loaders hold that many batches; its EMA
    validation runs every ``eval_every`` steps and at the last one); returns (trainer, datasets, seconds of ``fit``).
    """
    import torch
    from torch.utils.data import Subset

    semilearn = import_semilearn()
    from semilearn.algorithms.fixmatch import FixMatch
    from semilearn.core.utils import get_data_loader

    from sesemi.builders import build_datamodule

    torch.manual_seed(int(cfg.run.seed))
    datasets = usb_datasets(build_datamodule(cfg))
    save_dir = Path(cfg.run.output_dir)
    args = usb_config(cfg, steps, save_dir, eval_every)
    algorithm = FixMatch(args, usb_net_builder(cfg, int(cfg.run.seed)))
    for hook in hooks:
        algorithm.register_hook(hook, type(hook).__name__, "LOWEST")
    trainer = semilearn.Trainer(args, algorithm)
    n = args.num_workers
    lb = get_data_loader(args, datasets["train_lb"], args.batch_size, num_workers=n, num_iters=steps, num_epochs=1)
    ulb = get_data_loader(
        args, datasets["train_ulb"], args.batch_size * args.uratio, num_workers=n, num_iters=steps, num_epochs=1
    )
    evalset = datasets["eval"] if eval_subset is None else Subset(datasets["eval"], range(eval_subset))
    eval_loader = eval_data_loader(args, evalset)
    started = time.perf_counter()
    trainer.fit(lb, ulb, eval_loader)
    return trainer, datasets, time.perf_counter() - started


# ---------------------------------------------------------------------------------------------------------------
# step: one side's run, in its own process (the driver interleaves them).


def sesemi_steps(cfg, steps: int) -> tuple[list[float], int, list[int]]:
    """sesemi's Lightning path for ``steps`` steps: the time at the end of each, the network's parameter count and
    the (labeled, unlabeled) batch sizes."""
    import pytorch_lightning as pl
    from omegaconf import open_dict

    from sesemi import builders

    stamps: list[float] = []

    class StepTimes(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            stamps.append(time.perf_counter())

    with open_dict(cfg):
        for name in ("checkpoint", "last_checkpoint"):  # they save at validation, which is off here
            cfg.callbacks.pop(name, None)
    dm = builders.build_datamodule(cfg)
    module = builders.build_module(cfg, dm.num_classes, dm.class_names)
    trainer = builders.build_trainer(cfg, enable_checkpointing=False, limit_val_batches=0, max_steps=steps)
    trainer.callbacks.append(StepTimes())
    trainer.fit(module, datamodule=dm)
    return stamps, _params(module.model), [dm.labeled_batch_size, dm.unlabeled_batch_size]


def usb_steps(cfg, steps: int) -> tuple[list[float], int, list[int]]:
    """USB's FixMatch through its Trainer: the time after all ``after_train_step`` hooks of each step, the
    network's parameter count and the batch sizes. One more step is run, untimed: USB validates in its last step."""
    from semilearn.core.hooks import Hook

    stamps: list[float] = []

    class StepTimes(Hook):
        def after_train_step(self, algorithm):
            stamps.append(time.perf_counter())

    import_semilearn()
    trainer, _, _ = usb_run(cfg, steps + 1, eval_every=10**9, hooks=[StepTimes()], eval_subset=256)
    loaders = trainer.algorithm.loader_dict
    return stamps[:steps], _params(trainer.algorithm.model), [loaders[k].batch_size for k in ("train_lb", "train_ulb")]


def _params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def side(args) -> None:
    """One side's run (``_sesemi`` / ``_usb``): its step end times as JSON on stdout's last line."""
    warnings.filterwarnings("ignore")
    import logging

    import pytorch_lightning  # noqa: F401  (configures its loggers on import)

    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose(Path(tmp), [f"run.seed={args.seed}", *args.overrides])
        if args.mode == "_usb":
            import_semilearn()
            stamps, params, batch = usb_steps(cfg, args.steps)
        else:
            stamps, params, batch = sesemi_steps(cfg, args.steps)
    print(json.dumps({"stamps": stamps, "params": params, "batch": batch}), flush=True)


def run_side(python: str, name: str, args, rep: int) -> dict[str, Any]:
    cmd = [python, __file__, f"_{name}", "--steps", str(args.steps), "--seed", str(rep), *args.overrides]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        sys.exit(f"error: the {name} side failed ({' '.join(cmd)}):\n{proc.stderr[-4000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    stamps = out["stamps"]
    if len(stamps) < args.steps:
        sys.exit(f"error: the {name} side timed {len(stamps)} of {args.steps} steps")
    timed = stamps[args.warmup : args.steps]
    steps_per_s = (len(timed) - 1) / (timed[-1] - timed[0])
    gaps = [b - a for a, b in itertools.pairwise(timed)]
    return {
        "steps_per_s": steps_per_s,
        "median_step_ms": 1000 * median(gaps),
        "params": out["params"],
        "batch": out["batch"],
        "load": load(),
    }


def step(args) -> dict[str, Any]:
    python = str(args.usb_python)
    runs: dict[str, list[dict[str, Any]]] = {"sesemi": [], "usb": []}
    for rep in range(args.repeats):
        order = [("sesemi", sys.executable), ("usb", python)]
        for name, exe in order if rep % 2 == 0 else order[::-1]:
            run = run_side(exe, name, args, rep)
            runs[name].append(run)
            print(
                f"rep {rep} {name}: {run['steps_per_s']:.3f} steps/s, median step {run['median_step_ms']:.0f} ms "
                f"(load {run['load']})",
                file=sys.stderr,
                flush=True,
            )
    same = {(r["params"], tuple(r["batch"])) for rs in runs.values() for r in rs}
    if len(same) != 1:
        sys.exit(f"error: the two sides did not train the same work: (parameters, batch sizes) {sorted(same)}")
    ((params, batch),) = same
    summary = {name: median(r["steps_per_s"] for r in rs) for name, rs in runs.items()}
    return {
        "params": params,
        "batch": list(batch),
        "steps": args.steps,
        "warmup": args.warmup,
        "repeats": args.repeats,
        "overrides": args.overrides,
        "runs": runs,
        "steps_per_s": summary,
        "ratio": summary["sesemi"] / summary["usb"],
        "ratio_range": [
            min(s["steps_per_s"] / u["steps_per_s"] for s, u in zip(runs["sesemi"], runs["usb"])),
            max(s["steps_per_s"] / u["steps_per_s"] for s, u in zip(runs["sesemi"], runs["usb"])),
        ],
        "loads": [r["load"] for rs in runs.values() for r in rs],
    }


# ---------------------------------------------------------------------------------------------------------------
# budget: USB's FixMatch through its own Trainer for a wall-clock budget (in USB's process).


def budget_run(args) -> None:
    """Calibrate USB's seconds per step, train for the budget, score the last raw and EMA weights on the test set;
    the row as JSON on stdout's last line."""
    warnings.filterwarnings("ignore")
    semilearn = import_semilearn()
    from semilearn.core.hooks import Hook

    class Clock(Hook):
        """Step end times; stops the run (USB's loop ends when ``it`` passes ``num_train_iter``) after ``limit_s``."""

        def __init__(self, limit_s: float = float("inf")) -> None:
            self.stamps: list[float] = []
            self.started, self.limit_s, self.stopped = time.perf_counter(), limit_s, False

        def after_train_step(self, algorithm):
            self.stamps.append(time.perf_counter())
            if self.stamps[-1] - self.started > self.limit_s:
                algorithm.it, self.stopped = algorithm.num_train_iter, True

    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose(Path(tmp), [f"run.seed={args.seed}", f"data.labels_per_class={args.labels}", *args.overrides])
        clock = Clock()
        usb_run(cfg, args.calibration_steps, eval_every=10**9, hooks=[clock], eval_subset=256)
        gaps = [b - a for a, b in itertools.pairwise(clock.stamps[10:])]
        s_per_step = median(gaps)
        steps = max(20, int(args.budget_min * 60 * 0.9 / s_per_step))
        run_started = time.perf_counter()
        clock = Clock(limit_s=args.budget_min * 60 * 1.1)
        trainer, datasets, fit_s = usb_run(cfg, steps, eval_every=max(1, steps // 10), hooks=[clock])
        algorithm = trainer.algorithm
        test = eval_data_loader(algorithm.args, datasets["test"])
        raw = trainer.evaluate(test)["acc"]
        ema = trainer.evaluate(test, use_ema_model=True)["acc"]
        run_s = time.perf_counter() - run_started
    row = {
        "framework": f"USB (semilearn {semilearn.__dict__.get('__version__', USB_VERSION)})",
        "method": "fixmatch",
        "labels_per_class": args.labels,
        "seed": args.seed,
        "budget_min": args.budget_min,
        "s_per_step": round(s_per_step, 4),
        "steps_planned": steps,
        "steps": len(clock.stamps),
        "stopped_by_budget": clock.stopped,
        "fit_s": round(fit_s, 1),
        "run_s": round(run_s, 1),
        "test_acc_raw": raw,
        "test_acc_ema": ema,
        "best_val_acc_ema": algorithm.best_eval_acc,
        "best_val_step": algorithm.best_it + 1,
        "load": load(),
    }
    print(json.dumps(row), flush=True)


def budget(args) -> dict[str, Any]:
    cmd = [str(args.usb_python), __file__, "_budget", "--budget-min", str(args.budget_min), "--seed", str(args.seed)]
    cmd += ["--labels", str(args.labels), "--calibration-steps", str(args.calibration_steps), *args.overrides]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        sys.exit(f"error: USB's budget run failed ({' '.join(cmd)}):\n{proc.stderr[-4000:]}")
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    row["wall_s"] = round(time.perf_counter() - started, 1)
    row["overrides"] = args.overrides
    # The row in the columns of the fmnist_accuracy.py table (its score is sesemi's EMA weights of the checkpoint
    # best on validation; USB's are its last weights, raw and EMA; the wall time is the run's, not the calibration's).
    row["fmnist_table_row"] = (
        f"| {row['labels_per_class']} | {row['budget_min']:g} min | USB fixmatch, last raw / EMA weights | "
        f"{100 * row['test_acc_raw']:.1f} / {100 * row['test_acc_ema']:.1f} (seed {row['seed']}) | "
        f"{100 - 100 * row['test_acc_raw']:.1f} / {100 - 100 * row['test_acc_ema']:.1f} | 1 | {row['steps']} | "
        f"{row['run_s']:.0f} s |"
    )
    print(json.dumps(row), file=sys.stderr, flush=True)
    return row


# ---------------------------------------------------------------------------------------------------------------
# The doc section: whatever of the two modes the results file holds.


def mean_std(accs: list[float]) -> str:
    return f"{100 * statistics.mean(accs):.1f} ± {100 * statistics.stdev(accs):.1f}%"


def budget_table(rows: list[dict[str, Any]]) -> str:
    """One line per budget run, then the mean ± std of each (labels per class, budget) run with several seeds."""
    lines = [
        [
            b["labels_per_class"],
            f"{b['budget_min']:g} min",
            b["seed"],
            f"{b['steps']}" + (" (stopped at 110%)" if b["stopped_by_budget"] else ""),
            f"{b['s_per_step']:.3f}",
            f"{b['fit_s']:.0f} s",
            f"{100 * b['test_acc_raw']:.1f}%",
            f"{100 * b['test_acc_ema']:.1f}%",
            f"{100 * b['best_val_acc_ema']:.1f}%, {b['best_val_step']}",
        ]
        for b in rows
    ]
    for (labels, minutes), group in itertools.groupby(rows, key=lambda r: (r["labels_per_class"], r["budget_min"])):
        group = list(group)
        if len(group) > 1:
            raw, ema = mean_std([g["test_acc_raw"] for g in group]), mean_std([g["test_acc_ema"] for g in group])
            steps = statistics.mean(g["steps"] for g in group)
            lines.append(
                [labels, f"{minutes:g} min", f"mean of {len(group)}", f"{steps:.0f}", "", "", f"**{raw}**", ema, ""]
            )
    header = ["labels/class", "budget", "seed", "steps", "s/step", "training", "test top-1 raw", "test top-1 EMA"]
    return markdown_table([*header, "val (EMA), step"], lines)


def section(result: dict[str, Any]) -> str:
    parts = [
        "sesemi beside Microsoft USB (`semilearn` 0.3.2, installed only for this benchmark by "
        "`benchmarks/setup_usb.sh`), on the same network (sesemi's SmallCNN width 16, 72k parameters), batches "
        "(16 labeled + 112 unlabeled x weak/strong), views (sesemi's `augment/fashion_mnist.yaml`) and split, CPU."
    ]
    if "step" in result:
        s = result["step"]
        rows = [
            [name, f"{s['steps_per_s'][key]:.2f}", f"{median(r['median_step_ms'] for r in s['runs'][key]):.0f}"]
            for key, name in (("sesemi", "sesemi (Lightning Trainer)"), ("usb", "USB (`Trainer.fit`)"))
        ]
        parts += [
            "",
            f"**Step rate, loaders included.** {s['repeats']} interleaved repetitions per side of {s['steps']} steps, "
            f"each in a fresh process, the first {s['warmup']} steps left out; median over repetitions. Ratio "
            f"sesemi / USB (goal: >= 1.0): **{s['ratio']:.2f}** (per repetition {s['ratio_range'][0]:.2f} – "
            f"{s['ratio_range'][1]:.2f}; load {min(s['loads']):.1f} – {max(s['loads']):.1f}).",
            "",
            markdown_table(["framework", "steps/s", "median ms/step"], rows),
            "",
            reproduce(s["command"]),
        ]
    if "budget" in result:
        rows = result["budget"]  # one run per (labels per class, budget, seed), in that order
        parts += [
            "",
            "**USB's FixMatch in a budget** through its own `Trainer.fit`: test top-1 of the last weights, raw and EMA "
            "(USB's own evaluation), on the 10,000 test images; *val (EMA)*: the best of USB's 10 validations on the "
            "5,000 held-out images; one row per seed, then the mean ± std of each setting run with several seeds.",
            "",
            budget_table(rows),
            "",
            reproduce("\n".join(dict.fromkeys(b["command"] for b in rows))),
        ]
    m = result.get("machine", {})
    parts += ["", f"Torch {m.get('torch')}, {m.get('cpu_count')} cores shared with other jobs."]
    return "\n".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("mode", choices=["step", "budget", "_sesemi", "_usb", "_budget"])
    parser.add_argument("--steps", type=int, default=120, help="step: steps per run")
    parser.add_argument(
        "--warmup", type=int, help="step: steps left out at the start of a run (default: 20, at most a quarter)"
    )
    parser.add_argument("--repeats", type=int, default=6, help="step: runs per side, interleaved")
    parser.add_argument("--budget-min", type=float, default=14.0, help="budget: minutes of training")
    parser.add_argument("--labels", type=int, default=10, help="budget: labeled images per class")
    parser.add_argument("--seed", type=int, default=0, help="budget: split and initialisation seed")
    parser.add_argument("--calibration-steps", type=int, default=40, help="budget: steps of the calibration run")
    parser.add_argument("--usb-python", type=Path, default=USB_PYTHON, help="the venv's python of setup_usb.sh")
    parser.add_argument("--out", type=Path, default=RESULTS / "usb_side_by_side.json")
    parser.add_argument("--doc", type=Path, default=DOC)
    parser.add_argument("overrides", nargs="*", help="sesemi config overrides for both sides, e.g. data.num_workers=0")
    args = parser.parse_intermixed_args()  # overrides may follow options
    if args.mode.startswith("_"):
        (budget_run if args.mode == "_budget" else side)(args)
        return
    if not args.usb_python.exists():
        sys.exit(f"error: --usb-python {args.usb_python} does not exist: run `bash benchmarks/setup_usb.sh` first")
    if not FMNIST.is_dir():
        sys.exit(f"error: Fashion-MNIST not found at {FMNIST}: apt-get install dataset-fashion-mnist")
    if args.warmup is None:
        args.warmup = min(20, args.steps // 4)
    if args.mode == "step" and not 0 <= args.warmup <= args.steps - 2:
        sys.exit(f"error: --warmup {args.warmup} must leave at least 2 of the --steps {args.steps} steps timed")
    result = json.loads(args.out.read_text()) if args.out.exists() else {}
    run = step(args) if args.mode == "step" else budget(args)
    run["command"] = result["command"] = command_line("usb_side_by_side.py")
    if args.mode == "step":
        result["step"] = run
    else:
        key = ("labels_per_class", "budget_min", "seed")
        rows = [r for r in result.get("budget", []) if [r[k] for k in key] != [run[k] for k in key]]
        result["budget"] = sorted([*rows, run], key=lambda r: [r[k] for k in key])
    result["machine"] = machine()
    write_json(args.out, result)
    text = section(result)
    print(text)
    write_section(args.doc, "usb", f"{HEADING}: sesemi beside USB", text)


if __name__ == "__main__":
    main()
