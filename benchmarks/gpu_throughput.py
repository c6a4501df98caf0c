"""P4 GPU throughput: images/s of FixMatch-style training steps, sesemi (Lightning) vs a hand-written loop.

Two backbones: WRN-28-2 on 32x32 images (the CIFAR-10 FixMatch experiment, 64 labeled + 7 x 64 unlabeled images x
(weak, strong) per step) and torchvision's ResNet-50 on 224x224 images (16 labeled + 7 x 16 unlabeled x 2 views).
For each, the same step in sesemi's Trainer and in a hand-written loop as fp32, bf16 mixed precision, bf16 +
channels_last and bf16 + channels_last + ``torch.compile`` of the backbone (``--grid full``: all 16 combinations of
precision, channels_last, compile and loop). The hand-written loop is the P1 loop: one forward over the
concatenated views, cross-entropy + FixMatch, SGD, EMA. Batches are random tensors already on the device, so the
data pipeline is out of the picture (P3 covers it). Images/s counts every image the network sees (labeled + both
unlabeled views).

One prepared run on a GPU machine (``--budget-s``, default 420 s, stops starting new configurations once it is
spent, and the results are written after each one, so a run stays within about 8 minutes):

    python benchmarks/gpu_throughput.py

The same script runs on CPU at a tiny size, so it is tested without a GPU (a smoke test, not a performance figure):

    python benchmarks/gpu_throughput.py --device cpu --tiny
"""

from __future__ import annotations

import argparse
import logging
import os
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
    reproduce,
    write_json,
    write_section,
)

MODELS: dict[str, dict[str, Any]] = {
    "wrn28_2": {"overrides": ["experiment=cifar10_wrn28_fixmatch_4000"], "size": 32, "labeled": 64, "mu": 7},
    "resnet50": {
        "overrides": ["model=torchvision", "model.backbone.name=resnet50"],
        "size": 224,
        "labeled": 16,
        "mu": 7,
    },
}
TINY = {"wrn28_2": {"size": 32, "labeled": 2, "mu": 1}, "resnet50": {"size": 64, "labeled": 2, "mu": 1}}

# (loop, precision, channels_last, compile)
GRID = [
    ("hand", "32-true", False, False),
    ("sesemi", "32-true", False, False),
    ("hand", "bf16-mixed", False, False),
    ("sesemi", "bf16-mixed", False, False),
    ("hand", "bf16-mixed", True, False),
    ("sesemi", "bf16-mixed", True, False),
    ("hand", "bf16-mixed", True, True),
    ("sesemi", "bf16-mixed", True, True),
]
FULL_GRID = [
    (loop, p, cl, c)
    for p in ("32-true", "bf16-mixed")
    for cl in (False, True)
    for c in (False, True)
    for loop in ("hand", "sesemi")
]


def quiet() -> None:
    """No warnings, no Lightning info lines (its loggers are configured on import, so import it first)."""
    warnings.filterwarnings("ignore")
    import pytorch_lightning  # noqa: F401

    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)


def compose(overrides: list[str], output_dir: str):
    import sesemi

    return sesemi.compose(overrides, output_dir=output_dir)


def make_batches(n: int, labeled: int, mu: int, size: int, classes: int, device, channels_last: bool) -> list[dict]:
    import torch

    fmt = torch.channels_last if channels_last else torch.contiguous_format
    gen = torch.Generator().manual_seed(0)

    def images(k: int):
        return torch.randn(k, 3, size, size, generator=gen).to(device).contiguous(memory_format=fmt)

    return [
        {
            "labeled": {
                "weak": images(labeled),
                "target": torch.randint(0, classes, (labeled,), generator=gen).to(device),
            },
            "unlabeled": {
                "weak": images(mu * labeled),
                "strong": images(mu * labeled),
                "target": torch.full((mu * labeled,), -1).to(device),
            },
        }
        for _ in range(n)
    ]


class Cycle:
    def __init__(self, items: list[Any], n: int) -> None:
        self.items, self.n = items, n

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        return (self.items[i % len(self.items)] for i in range(self.n))


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def hand_loop(cfg, module, batches, steps: int, warmup: int, precision: str, device) -> float:
    """The P1 hand-written step (FixMatch + CE, SGD, per-step LR, EMA) under autocast; seconds for the timed steps."""
    import torch
    import torch.nn.functional as F

    model = module.model.to(device)
    backbone, head = model.backbone, model.head
    fm = cfg.method.loss_heads.fixmatch
    o = cfg.optimizer
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    optimizer = torch.optim.SGD(
        [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=o.lr,
        momentum=o.momentum,
        nesterov=o.nesterov,
        weight_decay=o.weight_decay,
    )
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(steps, 1))
    ema = module.ema.module.to(device)
    pairs = [
        (e, s)
        for e, s in zip([*ema.parameters(), *ema.buffers()], [*module.model.parameters(), *module.model.buffers()])
    ]
    ema_f = [e for e, s in pairs if e.is_floating_point()]
    src_f = [s for e, s in pairs if e.is_floating_point()]
    ema_i = [(e, s) for e, s in pairs if not e.is_floating_point()]
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16-mixed")
    model.train()
    t0 = time.perf_counter()
    for step in range(steps):
        if step == warmup:
            sync(device)
            t0 = time.perf_counter()
        b = batches[step % len(batches)]
        x_l, y_l, u_w, u_s = (
            b["labeled"]["weak"],
            b["labeled"]["target"],
            b["unlabeled"]["weak"],
            b["unlabeled"]["strong"],
        )
        with autocast:
            f_l, f_w, f_s = backbone(torch.cat([x_l, u_w, u_s])).split([len(x_l), len(u_w), len(u_s)])
            loss_sup = F.cross_entropy(head(f_l), y_l)
            conf, pseudo = torch.softmax(head(f_w).detach().float(), dim=-1).max(dim=-1)
            mask = (conf >= float(fm.threshold)).float()
            loss_fm = (F.cross_entropy(head(f_s), pseudo, reduction="none") * mask).mean()
            loss = loss_sup + float(fm.weight) * loss_fm
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        with torch.no_grad():
            d = min(0.999, (2 + step) / (11 + step))
            for e, s in ema_i:
                e.copy_(s)
            torch._foreach_lerp_(ema_f, src_f, 1.0 - d)
    sync(device)
    return time.perf_counter() - t0


def sesemi_loop(cfg, module, batches, steps: int, warmup: int, device) -> float:
    """The same steps through sesemi's Trainer (no callbacks, logger or progress bar); seconds for the timed steps."""
    import pytorch_lightning as pl
    from pytorch_lightning.utilities import CombinedLoader

    from sesemi.builders import build_trainer

    marks: dict[str, float] = {}

    class Timer(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if batch_idx == warmup:
                sync(device)
                marks["t0"] = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if batch_idx == steps - 1:
                sync(device)
                marks["t1"] = time.perf_counter()

    trainer = build_trainer(
        cfg,
        enable_checkpointing=False,
        limit_val_batches=0,
        max_steps=steps,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.callbacks.append(Timer())
    loaders = {s: Cycle([b[s] for b in batches], steps) for s in ("labeled", "unlabeled")}
    trainer.fit(module, train_dataloaders=CombinedLoader(loaders, mode="max_size_cycle"))
    return marks["t1"] - marks["t0"]


def run_config(name: str, spec: dict[str, Any], variant: tuple, args, device) -> dict[str, Any]:
    import torch
    from omegaconf import open_dict

    from sesemi.builders import build_module

    loop, precision, channels_last, compiled = variant
    accel = "gpu" if device.type == "cuda" else "cpu"
    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose(
            [
                *spec["overrides"],
                f"run.accelerator={accel}",
                f"run.precision={precision}",
                f"trainer.max_steps={args.steps}",
                "trainer.log_every_n_steps=50",
            ],
            tmp,
        )
        with open_dict(cfg):
            cfg.callbacks = {}
            cfg.logger = {}
        torch.manual_seed(0)
        module = build_module(cfg, args.classes)
        if channels_last:
            module = module.to(memory_format=torch.channels_last)
        if compiled:
            torch._dynamo.reset()
            module.model.backbone = torch.compile(module.model.backbone, backend=args.compile_backend)
        batches = make_batches(4, spec["labeled"], spec["mu"], spec["size"], args.classes, device, channels_last)
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        started = time.perf_counter()
        if loop == "hand":
            seconds = hand_loop(cfg, module, batches, args.steps, args.warmup, precision, device)
        else:
            seconds = sesemi_loop(cfg, module, batches, args.steps, args.warmup, device)
        total = time.perf_counter() - started
    timed = args.steps - args.warmup
    per_step = spec["labeled"] * (1 + 2 * spec["mu"])
    row = {
        "model": name,
        "image_size": spec["size"],
        "labeled": spec["labeled"],
        "mu": spec["mu"],
        "loop": loop,
        "precision": precision,
        "channels_last": channels_last,
        "compile": compiled,
        "images_per_step": per_step,
        "step_ms": 1000 * seconds / timed,
        "images_per_s": per_step * timed / seconds,
        "warmup_s": total - seconds,
        "load": load(),
    }
    if device.type == "cuda":
        row["peak_mem_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    return row


def table(result: dict[str, Any], command: str) -> str:
    m = result["machine"]
    rows = result["rows"]
    ref = {(r["model"], r["precision"], r["channels_last"], r["compile"]): r for r in rows if r["loop"] == "hand"}
    out = []
    for r in rows:
        hand = ref.get((r["model"], r["precision"], r["channels_last"], r["compile"]))
        measured = hand and r["loop"] == "sesemi" and result["device"] == "cuda"
        ratio = f"{r['images_per_s'] / hand['images_per_s']:.3f}" if measured else ""
        out.append(
            [
                r["model"],
                f"{r['image_size']}x{r['image_size']}",
                f"{r['labeled']} + 2 x {r['mu'] * r['labeled']}",
                r["loop"],
                r["precision"],
                "on" if r["channels_last"] else "off",
                "on" if r["compile"] else "off",
                f"{r['images_per_s']:.0f}",
                f"{r['step_ms']:.1f}",
                ratio,
                f"{r['peak_mem_gib']:.1f}" if "peak_mem_gib" in r else "–",
            ]
        )
    header = [
        "model",
        "size",
        "batch (labeled + views)",
        "loop",
        "precision",
        "channels_last",
        "compile",
        "images/s",
        "ms/step",
        "sesemi / hand",
        "peak GiB",
    ]
    if result["device"] == "cuda":
        intro = (
            f"Measured on {m['cuda']} (torch {m['torch']}, Lightning {m.get('pytorch_lightning')}), "
            f"{result['steps'] - result['warmup']} timed steps after {result['warmup']} warm-up steps."
        )
    else:
        intro = (
            "**No GPU was lent to this task, so the P4 GPU numbers are not measured.** The table is the CPU smoke "
            f"run of the same script at tiny size ({result['steps'] - result['warmup']} timed steps; "
            f"`torch.compile` backend `{result['compile_backend']}`), which only shows that every configuration "
            "runs; its timings say nothing about a GPU. On a GPU machine run `python benchmarks/gpu_throughput.py` "
            "(16 configurations; `--budget-s`, default 420 s, stops starting new ones once it is spent, so "
            "one run stays within about 8 minutes; the GPU timings have not been taken yet)."
        )
    skipped = result.get("skipped") or []
    lines = [intro, "", markdown_table(header, out)]
    if skipped:
        lines += ["", f"Not run (time budget spent): {', '.join(skipped)}."]
    lines += ["", reproduce(command)]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    parser.add_argument("--tiny", action="store_true", help="tiny batches and images (CPU smoke test)")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--grid", choices=["default", "full"], default="default")
    parser.add_argument("--loops", nargs="+", default=["hand", "sesemi"], choices=["hand", "sesemi"])
    parser.add_argument("--no-compile", action="store_true", help="leave out the torch.compile configurations")
    parser.add_argument("--compile-backend", default="inductor", help="torch.compile backend (eager: a quick check)")
    parser.add_argument("--steps", type=int, default=None, help="steps per configuration (default 40, tiny 3)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed first steps (default 10, tiny 1)")
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--budget-s", type=float, default=420.0, help="start no configuration after this many seconds")
    parser.add_argument("--out", type=Path, default=RESULTS / "gpu_throughput.json")
    parser.add_argument("--doc", type=Path, default=DOC)
    parser.add_argument("--no-doc", action="store_true")
    args = parser.parse_args()
    quiet()
    import torch

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("no GPU here: run with --device cpu --tiny for the CPU smoke test")
    args.steps = args.steps or (3 if args.tiny else 40)
    args.warmup = min(args.warmup if args.warmup is not None else (1 if args.tiny else 10), args.steps - 1)
    if device.type == "cuda":  # what sesemi's build_trainer sets on GPUs; the hand loop gets the same
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    grid = [
        v for v in (FULL_GRID if args.grid == "full" else GRID) if v[0] in args.loops and not (args.no_compile and v[3])
    ]
    result: dict[str, Any] = {
        "machine": machine(),
        "device": device.type,
        "steps": args.steps,
        "warmup": args.warmup,
        "compile_backend": args.compile_backend,
        "rows": [],
        "skipped": [],
        "command": command_line("gpu_throughput.py"),
    }
    started = time.perf_counter()
    for name in args.models:
        spec = {**MODELS[name], **(TINY[name] if args.tiny else {})}
        for variant in grid:
            label = f"{name} {'/'.join(str(v) for v in variant)}"
            if time.perf_counter() - started > args.budget_s:
                result["skipped"].append(label)
                continue
            try:
                row = run_config(name, spec, variant, args, device)
            except Exception as err:  # noqa: BLE001  (e.g. out of memory: record it, go on with the next)
                row = {
                    "model": name,
                    "loop": variant[0],
                    "precision": variant[1],
                    "channels_last": variant[2],
                    "compile": variant[3],
                    "error": f"{type(err).__name__}: {str(err)[:300]}",
                }
                print(f"{label}: {row['error']}", file=sys.stderr, flush=True)
                result.setdefault("errors", []).append(row)
            else:
                result["rows"].append(row)
                print(
                    f"{label}: {row['images_per_s']:.0f} images/s, {row['step_ms']:.1f} ms/step",
                    file=sys.stderr,
                    flush=True,
                )
            write_json(args.out, result)
    text = table(result, result["command"])
    print(text)
    if not args.no_doc:
        write_section(args.doc, "P4", "Performance P4: GPU throughput", text)
    if result.get("errors") and not result["rows"]:
        sys.exit(1)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    main()
