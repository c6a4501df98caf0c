"""P1 step overhead: sesemi's training-step rate vs a hand-written PyTorch loop doing exactly the same SSL step.

Both sides train the default experiment's network (FixMatch on 8x8 digits: SmallCNN + linear head, 16 labeled +
112 unlabeled images x (weak, strong) views per step, cross-entropy + FixMatch heads, SGD with Nesterov momentum and
weight decay without decay on norms/biases, cosine LR stepped every step, EMA update of every weight after every
step) on the same batches, drawn once from the real data module and kept in memory as tensors, so the data
pipeline is out of the picture and the ratio isolates the framework (Lightning's loop, sesemi's module, logging,
callbacks). Validation and checkpointing are off on both sides (they are not per-step work).

Variants, built with the real builders from the real configs (``--variants``):

- ``default``: the default callbacks and logger (progress bar, LR monitor, image grids, TensorBoard, logging every
  ``trainer.log_every_n_steps``), i.e. what ``python -m sesemi.train`` pays per step;
- ``bare``: no callbacks, no logger, no progress bar (Lightning's loop and sesemi's module only);
- ``lightning``: not sesemi at all: the hand-written step as the smallest LightningModule on the same bare Trainer,
  i.e. what Lightning's loop costs by itself (also ``no_progress_bar`` and ``no_logger``, for attribution).

The machine is shared and loaded, so the two loops are timed in pairs: sesemi trains for real with the Trainer,
and after each of its steps a callback runs the hand loop's step on the same batch (a second copy of the network,
same initial weights). A sesemi step is timed from the end of that hand step to the next callback (one full cycle
of Lightning's loop, hooks, logging and sesemi's module), so both durations of a pair were measured under the same
load. The ratio of a run is median(hand step) / median(sesemi step); variants alternate between runs, and the table
gives medians over runs. Everything runs twice: with torch's default threads, timed by the wall clock (what a run
sees), and with one torch thread, timed by the main thread's CPU time (all of a step's work, not inflated by other
processes: the noise-free figure on a shared machine).

    python benchmarks/step_overhead.py                     # the table in docs/benchmarks.md
    python benchmarks/step_overhead.py --profile default   # cProfile of one sesemi run: where the time goes
"""

from __future__ import annotations

import argparse
import copy
import cProfile
import io
import logging
import os
import pstats
import sys
import tempfile
import time
import warnings
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
    quantile,
    reproduce,
    write_json,
    write_section,
)

# variant -> (callbacks removed from the default config, logger kept, progress bar kept)
VARIANTS: dict[str, tuple[tuple[str, ...], bool, bool]] = {
    "default": ((), True, True),
    "no_progress_bar": (("progress_bar",), True, False),
    "no_logger": (("lr_monitor", "images"), False, True),
    "bare": (("progress_bar", "lr_monitor", "images"), False, False),
    "lightning": (("progress_bar", "lr_monitor", "images"), False, False),
}
NAMES = {
    "default": "default callbacks + TensorBoard logger",
    "no_progress_bar": "default without the progress bar",
    "no_logger": "progress bar only (no logger, LR monitor, image grids)",
    "bare": "no callbacks, no logger, no progress bar",
    "lightning": "not sesemi: the hand-written step as a minimal LightningModule, bare Trainer",
}


def quiet() -> None:
    """No warnings, no Lightning info lines (its loggers are configured on import, so import it first)."""
    warnings.filterwarnings("ignore")
    import pytorch_lightning  # noqa: F401

    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)


def compose(output_dir: Path, overrides: list[str]):
    import sesemi

    return sesemi.compose(overrides, output_dir=output_dir)


class Cycle:
    """``n`` items cycling through ``items``: an epoch of in-memory batches."""

    def __init__(self, items: list[Any], n: int) -> None:
        self.items, self.n = items, n

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        return (self.items[i % len(self.items)] for i in range(self.n))


def draw_batches(cfg, k: int) -> tuple[list[dict], list[dict]]:
    """``k`` real training batches of each stream (the default augmentations), materialised once."""
    from sesemi.builders import build_datamodule

    dm = build_datamodule(cfg)
    loaders = dm.train_dataloader().iterables
    out = {}
    for stream, loader in loaders.items():
        batches, it = [], iter(loader)
        for _ in range(k):
            try:
                batches.append(next(it))
            except StopIteration:
                it = iter(loader)
                batches.append(next(it))
        out[stream] = batches
    return out["labeled"], out.get("unlabeled", [])


def make_module(cfg, num_classes: int, seed: int):
    import torch

    from sesemi.builders import build_module

    torch.manual_seed(seed)
    return build_module(cfg, num_classes)


# ---------------------------------------------------------------------------------------------------------------
# The hand-written loop: the same SSL step in plain PyTorch.


class HandLoop:
    """FixMatch + cross-entropy, SGD, per-step cosine LR, EMA: what a researcher would write without a framework.

    The network, optimizer parameter groups and hyperparameters are the ones the config gives sesemi; the forward is
    one pass over ``cat(labeled weak, unlabeled weak, unlabeled strong)`` with the head applied per view, as in
    sesemi's StepContext. Losses and the mask ratio are kept every ``log_every_n_steps`` (one ``.item()`` each).
    """

    def __init__(self, cfg, module, labeled, unlabeled) -> None:
        import torch

        self.model = module.model
        self.labeled, self.unlabeled = labeled, unlabeled
        fm_cfg = cfg.method.loss_heads.fixmatch
        self.threshold, self.fm_weight = float(fm_cfg.threshold), float(fm_cfg.weight)
        o = cfg.optimizer
        decay = [p for p in self.model.parameters() if p.ndim > 1]
        no_decay = [p for p in self.model.parameters() if p.ndim <= 1]
        self.optimizer = torch.optim.SGD(
            [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=o.lr,
            momentum=o.momentum,
            nesterov=o.nesterov,
            weight_decay=o.weight_decay,
        )
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=int(cfg.lr_scheduler.T_max))
        ema_model = copy.deepcopy(self.model).requires_grad_(False).eval()
        self.ema_decay = float(cfg.method.ema.decay)
        self.ema_float, self.src_float, self.ema_int, self.src_int = [], [], [], []
        for e, s in zip(
            [*ema_model.parameters(), *ema_model.buffers()], [*self.model.parameters(), *self.model.buffers()]
        ):
            (self.ema_float if e.is_floating_point() else self.ema_int).append(e)
            (self.src_float if e.is_floating_point() else self.src_int).append(s)
        self.log_every = int(cfg.trainer.log_every_n_steps)
        self.history: list[tuple[float, ...]] = []
        self.model.train()

    def loss(self, batch: dict, step: int):
        """Forward and loss of one step (the part a LightningModule's training_step does)."""
        import torch
        import torch.nn.functional as F

        backbone, head = self.model.backbone, self.model.head
        lb, ub = batch["labeled"], batch["unlabeled"]
        x_l, y_l, u_w, u_s = lb["weak"], lb["target"], ub["weak"], ub["strong"]
        sizes = [len(x_l), len(u_w), len(u_s)]
        f_l, f_w, f_s = backbone(torch.cat([x_l, u_w, u_s])).split(sizes)
        loss_sup = F.cross_entropy(head(f_l), y_l)
        probs = torch.softmax(head(f_w).detach(), dim=-1)
        confidence, pseudo = probs.max(dim=-1)
        mask = (confidence >= self.threshold).float()
        loss_fm = (F.cross_entropy(head(f_s), pseudo, reduction="none") * mask).mean()
        loss = loss_sup + self.fm_weight * loss_fm
        if step % self.log_every == 0:
            self.history.append((loss.item(), loss_sup.item(), loss_fm.item(), mask.mean().item()))
        return loss

    def ema_update(self, step: int) -> None:
        import torch

        with torch.no_grad():
            d = min(self.ema_decay, (1 + step + 1) / (10 + step + 1))
            for e, s in zip(self.ema_int, self.src_int):
                e.copy_(s)
            torch._foreach_lerp_(self.ema_float, self.src_float, 1.0 - d)

    def step(self, step: int) -> None:
        batch = {
            "labeled": self.labeled[step % len(self.labeled)],
            "unlabeled": self.unlabeled[step % len(self.unlabeled)],
        }
        loss = self.loss(batch, step)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        self.ema_update(step)

    def run(self, steps: int) -> list[float]:
        times = []
        for step in range(steps):
            self.step(step)
            times.append(time.perf_counter())
        return times


def minimal_lightning_module(loop: HandLoop):
    """The hand loop's step as the smallest LightningModule (automatic optimization, no ``self.log``): what
    Lightning's loop costs by itself, before any of sesemi's module, callbacks or logging."""
    import pytorch_lightning as pl

    class Minimal(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.model = loop.model

        def training_step(self, batch, batch_idx):
            return loop.loss(batch, self.global_step)

        def on_train_batch_end(self, outputs, batch, batch_idx):
            loop.ema_update(self.global_step - 1)

        def configure_optimizers(self):
            return {"optimizer": loop.optimizer, "lr_scheduler": {"scheduler": loop.scheduler, "interval": "step"}}

    return Minimal()


# ---------------------------------------------------------------------------------------------------------------
# sesemi (Lightning) side, with the hand loop's step k run right after sesemi's step k (paired timing).


def sesemi_run(cfg, module, labeled, unlabeled, steps: int, variant: str, hand: HandLoop | None = None):
    """Train ``steps`` steps with the real Trainer; with ``hand``, run the hand loop's step after each of sesemi's
    steps, from the last ``on_train_batch_end`` callback. Returns (sesemi step durations, hand step durations),
    each a (wall-clock, main-thread CPU time) pair: a sesemi step is the time from the end of that hand step to the
    next callback (a full cycle of Lightning's loop, hooks, logging and sesemi's module), so each pair of durations
    was measured under the same load."""
    import pytorch_lightning as pl
    import torch
    from omegaconf import open_dict
    from pytorch_lightning.utilities import CombinedLoader

    from sesemi import builders

    sesemi_times: list[tuple[float, float]] = []
    hand_times: list[tuple[float, float]] = []
    last = [(0.0, 0.0)]

    def now() -> tuple[float, float]:
        return time.perf_counter(), time.thread_time()

    class PairedTimer(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            t_a = now()
            if batch_idx > 0:
                sesemi_times.append((t_a[0] - last[0][0], t_a[1] - last[0][1]))
            if hand is not None:
                with torch.enable_grad():
                    hand.step(batch_idx)
                t_b = now()
                hand_times.append((t_b[0] - t_a[0], t_b[1] - t_a[1]))
                last[0] = t_b
            else:
                last[0] = t_a

    overrides: dict[str, Any] = {"enable_checkpointing": False, "limit_val_batches": 0, "max_steps": steps}
    cfg = copy.deepcopy(cfg)
    removed, keep_logger, keep_bar = VARIANTS[variant]
    with open_dict(cfg):
        for name in ("checkpoint", "last_checkpoint"):  # checkpoints are written at validation, which is off here
            cfg.callbacks.pop(name, None)
        for name in removed:
            cfg.callbacks.pop(name, None)
        if not keep_logger:
            cfg.logger = {}
    if not keep_bar:
        overrides.update(enable_progress_bar=False)
    trainer = builders.build_trainer(cfg, **overrides)
    trainer.callbacks.append(PairedTimer())
    loaders = {"labeled": Cycle(labeled, steps)}
    if unlabeled:
        loaders["unlabeled"] = Cycle(unlabeled, steps)
    trainer.fit(module, train_dataloaders=CombinedLoader(loaders, mode="max_size_cycle"))
    return sesemi_times, hand_times


def _summary(pairs: list[tuple[float, float]]) -> dict[str, float]:
    s_med, h_med = median(s for s, _ in pairs), median(h for _, h in pairs)
    s_p10, h_p10 = quantile([s for s, _ in pairs], 0.1), quantile([h for _, h in pairs], 0.1)
    return {
        "sesemi_ms": 1000 * s_med,
        "hand_ms": 1000 * h_med,
        "ratio": h_med / s_med,
        "sesemi_p10_ms": 1000 * s_p10,
        "hand_p10_ms": 1000 * h_p10,
        "ratio_p10": h_p10 / s_p10,
        "overhead_ms": 1000 * (s_med - h_med),
    }


def measure(args, overrides: list[str], threads: int | None) -> dict[str, Any]:
    """Paired runs of every variant; per run the medians (and 10th percentiles) of the wall-clock and of the CPU
    time of the step pairs after warm-up. With one torch thread the main thread's CPU time is all the work of a
    step (CPU autograd runs on the calling thread) and is not inflated by other processes' load."""
    quiet()
    import torch

    from sesemi.builders import build_datamodule

    default_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in args.variants}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            cfg = compose(Path(tmp), [f"trainer.max_steps={args.steps}", "data.num_workers=0", *overrides])
            labeled, unlabeled = draw_batches(cfg, args.batches)
            num_classes = build_datamodule(cfg).num_classes
            for rep in range(args.repeats):
                k = rep % len(args.variants)
                for name in args.variants[k:] + args.variants[:k]:
                    hand = HandLoop(cfg, make_module(cfg, num_classes, seed=rep), labeled, unlabeled)
                    module = make_module(cfg, num_classes, seed=rep)
                    if name == "lightning":
                        module = minimal_lightning_module(HandLoop(cfg, module, labeled, unlabeled))
                    s_times, h_times = sesemi_run(cfg, module, labeled, unlabeled, args.steps, name, hand)
                    # sesemi step k (k >= 1) is paired with hand step k; the first steps are warm-up.
                    pairs = list(zip(s_times, h_times[1:]))[args.warmup :]
                    run = {
                        "wall": _summary([(s[0], h[0]) for s, h in pairs]),
                        "cpu": _summary([(s[1], h[1]) for s, h in pairs]),
                        "load": load(),
                    }
                    runs[name].append(run)
                    w, c = run["wall"], run["cpu"]
                    print(
                        f"threads {torch.get_num_threads()} rep {rep} {name}: wall {w['sesemi_ms']:.2f} / "
                        f"{w['hand_ms']:.2f} ms (ratio {w['ratio']:.3f}, p10 ratio {w['ratio_p10']:.3f}); CPU "
                        f"{c['sesemi_ms']:.2f} / {c['hand_ms']:.2f} ms (ratio {c['ratio']:.3f}) (load {run['load']})",
                        file=sys.stderr,
                        flush=True,
                    )
    finally:
        torch.set_num_threads(default_threads)
    variants = {}
    for name, rs in runs.items():
        variants[name] = {"runs": rs, "loads": [r["load"] for r in rs]}
        for clock in ("wall", "cpu"):
            variants[name][clock] = {k: median(r[clock][k] for r in rs) for k in rs[0][clock]}
            variants[name][clock]["ratio_range"] = [
                min(r[clock]["ratio"] for r in rs),
                max(r[clock]["ratio"] for r in rs),
            ]
    return {"torch_threads": threads or default_threads, "variants": variants}


def profile(args, overrides: list[str], variant: str) -> str:
    quiet()
    from sesemi.builders import build_datamodule

    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose(Path(tmp), [f"trainer.max_steps={args.steps}", "data.num_workers=0", *overrides])
        labeled, unlabeled = draw_batches(cfg, args.batches)
        num_classes = build_datamodule(cfg).num_classes
        module = make_module(cfg, num_classes, 0)
        prof = cProfile.Profile()
        if variant == "hand":
            prof.runcall(HandLoop(cfg, module, labeled, unlabeled).run, args.steps)
        elif variant == "lightning":
            minimal = minimal_lightning_module(HandLoop(cfg, module, labeled, unlabeled))
            prof.runcall(sesemi_run, cfg, minimal, labeled, unlabeled, args.steps, variant)
        else:
            prof.runcall(sesemi_run, cfg, module, labeled, unlabeled, args.steps, variant)
    if args.profile_out:
        prof.dump_stats(args.profile_out)
    out = io.StringIO()
    stats = pstats.Stats(prof, stream=out)
    stats.sort_stats("tottime").print_stats(40)
    stats.sort_stats("cumulative").print_stats(80)
    return out.getvalue()


def table(result: dict[str, Any], command: str) -> str:
    m = result["machine"]
    wall, cpu = result["wall_clock"], result.get("cpu_time")
    rows = []
    for name, v in wall["variants"].items():
        w = v["wall"]
        row = [
            NAMES.get(name, name),
            f"{w['hand_ms']:.2f}",
            f"{w['sesemi_ms']:.2f}",
            f"**{w['ratio']:.3f}**",
            f"{w['ratio_range'][0]:.3f} – {w['ratio_range'][1]:.3f}",
            f"{w['ratio_p10']:.3f}",
            f"{min(v['loads']):.1f} – {max(v['loads']):.1f}",
        ]
        if cpu and name in cpu["variants"]:
            c = cpu["variants"][name]["cpu"]
            row += [
                f"{c['hand_ms']:.2f}",
                f"{c['sesemi_ms']:.2f}",
                f"**{c['ratio']:.3f}**",
                f"{c['sesemi_ms'] - c['hand_ms']:+.2f}",
            ]
        rows.append(row)
    header = ["loop", "hand ms/step (wall)", "ms/step (wall)", "ratio (wall)", "ratio range", "ratio of p10", "load"]
    if cpu:
        header += ["hand ms/step (CPU, 1 thread)", "ms/step (CPU, 1 thread)", "ratio (CPU)", "overhead ms/step (CPU)"]
    text = [
        (
            f"Goal: ratio = hand-loop step time / sesemi step time >= 0.97 (the step rate relative to the hand loop). "
            f"{result['repeats']} runs per variant of {result['steps']} steps; each step paired with the hand loop's "
            "same step run right after it; per run the median over the last "
            f"{result['steps'] - 1 - result['warmup']} pairs; "
            f"the table gives the median over runs. *Wall*: wall-clock time with torch's default "
            f"{wall['torch_threads']} threads (what a run sees; inflated by whatever else runs on the machine). *CPU*: "
            "the CPU time of the main thread with 1 torch thread (all the work of a step, not inflated by other "
            "processes), the noise-free measure of the same ratio. "
            f"Torch {m['torch']}, Lightning {m.get('pytorch_lightning')}, "
            f"{m['cpu_count']} cores shared with other jobs."
        ),
        "",
        markdown_table(header, rows),
        "",
        reproduce(command),
    ]
    return "\n".join(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=120, help="optimizer steps per run")
    parser.add_argument("--warmup", type=int, default=10, help="step pairs left out at the start of a run")
    parser.add_argument("--repeats", type=int, default=4, help="runs per variant, interleaved (medians reported)")
    parser.add_argument("--batches", type=int, default=16, help="distinct in-memory batches cycled through")
    parser.add_argument("--variants", nargs="+", default=["default", "bare", "lightning"], choices=list(VARIANTS))
    parser.add_argument(
        "--no-cpu-time", dest="cpu_time", action="store_false", help="skip the second pass (1 torch thread, CPU time)"
    )
    parser.add_argument("--profile", choices=[*VARIANTS, "hand"], help="print a cProfile of one run instead")
    parser.add_argument("--profile-out", type=Path, help="with --profile: also save the pstats file here")
    parser.add_argument("--out", type=Path, default=RESULTS / "step_overhead.json")
    parser.add_argument("--doc", type=Path, default=DOC, help="markdown file whose P1 section is rewritten")
    parser.add_argument("--no-doc", action="store_true")
    parser.add_argument("overrides", nargs="*", help="config overrides for both sides, e.g. model.backbone.width=64")
    args = parser.parse_args()
    if args.profile:
        print(profile(args, args.overrides, args.profile))
        return
    args.warmup = min(args.warmup, args.steps - 2)
    info = machine()
    result: dict[str, Any] = {
        "steps": args.steps,
        "warmup": args.warmup,
        "repeats": args.repeats,
        "overrides": args.overrides,
    }
    result["wall_clock"] = measure(args, args.overrides, None)
    if args.cpu_time:
        result["cpu_time"] = measure(args, args.overrides, 1)
    result["machine"] = info
    result["command"] = command_line("step_overhead.py")
    write_json(args.out, result)
    print(table(result, result["command"]))
    if not args.no_doc:
        write_section(
            args.doc,
            "P1",
            "Performance P1: step overhead vs a hand-written PyTorch loop",
            table(result, result["command"]),
        )


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    main()
